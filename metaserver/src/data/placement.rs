//! Where new replicas go: distinct servers, spread over zones first, chosen
//! at random weighted by free space so that emptier servers fill faster
//! without every block landing on the single emptiest one.

use nimbus_common::ServerId;
use rand::Rng;

/// A server that could take a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: ServerId,
    pub addr: String,
    pub zone: String,
    pub free: u64,
}

/// Picks up to `n` servers with at least `need` bytes free, none in
/// `exclude`, preferring zones not in `used_zones` nor already picked.
pub fn choose(
    candidates: &[Candidate],
    n: usize,
    need: u64,
    exclude: &[ServerId],
    used_zones: &[String],
    rng: &mut impl Rng,
) -> Vec<Candidate> {
    let mut pool: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.free >= need && !exclude.contains(&c.id))
        .collect();
    let mut zones: Vec<String> = used_zones.to_vec();
    let mut out = Vec::with_capacity(n);
    while out.len() < n && !pool.is_empty() {
        let fresh: Vec<usize> = (0..pool.len()).filter(|i| !zones.contains(&pool[*i].zone)).collect();
        let among: Vec<usize> = if fresh.is_empty() {
            (0..pool.len()).collect()
        } else {
            fresh
        };
        // Weight by free space; +1 so that a server with nothing free still
        // has a chance when it is all there is.
        let total: u128 = among.iter().map(|i| u128::from(pool[*i].free) + 1).sum();
        let mut pick = rng.random_range(0..total);
        let mut chosen = among[0];
        for i in &among {
            let w = u128::from(pool[*i].free) + 1;
            if pick < w {
                chosen = *i;
                break;
            }
            pick -= w;
        }
        let c = pool.remove(chosen);
        zones.push(c.zone.clone());
        out.push(c.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn c(id: u64, zone: &str, free: u64) -> Candidate {
        Candidate {
            id: ServerId(id),
            addr: format!("s{id}"),
            zone: zone.into(),
            free,
        }
    }

    #[test]
    fn distinct_servers_spread_over_zones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cands = [c(1, "a", 100), c(2, "a", 100), c(3, "b", 100), c(4, "c", 100)];
        for _ in 0..200 {
            let got = choose(&cands, 3, 10, &[], &[], &mut rng);
            let mut zones: Vec<_> = got.iter().map(|c| c.zone.clone()).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "three zones for three replicas: {got:?}");
        }
    }

    #[test]
    fn full_and_excluded_servers_are_skipped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let cands = [c(1, "a", 5), c(2, "a", 100), c(3, "a", 100)];
        for _ in 0..50 {
            let got = choose(&cands, 2, 10, &[ServerId(3)], &[], &mut rng);
            assert_eq!(got.iter().map(|c| c.id.0).collect::<Vec<_>>(), vec![2]);
        }
        assert!(choose(&cands, 2, 1000, &[], &[], &mut rng).is_empty());
    }

    #[test]
    fn emptier_servers_are_chosen_more_often() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cands = [c(1, "a", 900), c(2, "a", 100)];
        let firsts = (0..1000)
            .filter(|_| choose(&cands, 1, 1, &[], &[], &mut rng)[0].id == ServerId(1))
            .count();
        assert!((800..980).contains(&firsts), "{firsts}");
    }
}
