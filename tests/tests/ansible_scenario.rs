//! The operators' Ansible scenario (tests/ansible/scenario.sh) as one test:
//! Debian 12 machines booted with systemd-nspawn, deployed, scaled out,
//! drained and restarted by the playbooks in ansible/. It needs root,
//! systemd-nspawn, mmdebstrap and ansible, and takes minutes, so it runs only
//! with NIMBUS_ANSIBLE_TEST=1 (as `.ci/run` sets); otherwise it says so and
//! passes.

use anyhow::Context;
use nimbus_tests::bin_dir;
use std::path::Path;
use std::process::Command;

#[test]
fn ansible_deploys_scales_drains_and_restarts_a_cluster() -> anyhow::Result<()> {
    if std::env::var("NIMBUS_ANSIBLE_TEST").as_deref() != Ok("1") {
        eprintln!("skipped: set NIMBUS_ANSIBLE_TEST=1 to run the Ansible scenario (root, systemd-nspawn, ansible)");
        return Ok(());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible/scenario.sh");
    let state = tempfile::Builder::new().prefix("nimbus-ansible.").tempdir()?;
    let status = Command::new(&script)
        .arg(state.path())
        .env("NIMBUS_BIN_DIR", bin_dir())
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    // On failure the script keeps its logs: keep the directory too.
    if !status.success() {
        let kept = state.keep();
        anyhow::bail!("{} failed ({status}); logs in {}", script.display(), kept.display());
    }
    Ok(())
}
