//! A streaming ZIP encoder (stored, no compression) for folder downloads:
//! each file's header goes out before its bytes, its CRC and size after them
//! in a data descriptor, and the central directory at the end, so nothing
//! is held back but one small record per entry. ZIP64 records are added when
//! sizes, offsets or the entry count need them (APPNOTE 6.3.x).

/// Zip64-capable "version needed to extract".
const VERSION: u16 = 45;
/// Bit 3: sizes and CRC follow the data; bit 11: names are UTF-8.
const FLAGS: u16 = 0x0808;
/// "Made by" Unix, so the mode bits count.
const MADE_BY: u16 = (3 << 8) | VERSION;
const U32_MAX: u64 = 0xFFFF_FFFF;

/// One entry's record for the central directory.
struct Central {
    name: Vec<u8>,
    dos_time: u16,
    dos_date: u16,
    crc: u32,
    size: u64,
    offset: u64,
    external_attrs: u32,
}

/// The state of one archive being written.
#[derive(Default)]
pub struct ZipWriter {
    offset: u64,
    entries: Vec<Central>,
    /// The file under way: its central record awaiting CRC and size.
    open: Option<Central>,
}

/// MS-DOS time and date of `unix_ms` (UTC; 1980 at the earliest).
fn dos_time(unix_ms: i64) -> (u16, u16) {
    let secs = (unix_ms / 1000).max(315_532_800);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = (year - 1980).clamp(0, 127);
    let time = ((rem / 3600) << 11) | (((rem % 3600) / 60) << 5) | ((rem % 60) / 2);
    let date = (year << 9) | (month << 5) | day;
    (time as u16, date as u16)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl ZipWriter {
    /// A new, empty archive.
    pub fn new() -> ZipWriter {
        ZipWriter::default()
    }

    fn local_header(&mut self, name: &str, unix_ms: i64, external_attrs: u32) -> Vec<u8> {
        let (dos_time, dos_date) = dos_time(unix_ms);
        let mut out = Vec::with_capacity(30 + name.len());
        put32(&mut out, 0x0403_4b50);
        put16(&mut out, VERSION);
        put16(&mut out, FLAGS);
        put16(&mut out, 0); // stored
        put16(&mut out, dos_time);
        put16(&mut out, dos_date);
        put32(&mut out, 0); // CRC, size and size: in the data descriptor
        put32(&mut out, 0);
        put32(&mut out, 0);
        put16(&mut out, name.len() as u16);
        put16(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        self.open = Some(Central {
            name: name.as_bytes().to_vec(),
            dos_time,
            dos_date,
            crc: 0,
            size: 0,
            offset: self.offset,
            external_attrs,
        });
        self.offset += out.len() as u64;
        out
    }

    /// The header of file `name` (a relative path, `/`-separated), to be
    /// followed by its bytes and [`ZipWriter::end_file`].
    pub fn begin_file(&mut self, name: &str, unix_ms: i64, mode: u32) -> Vec<u8> {
        self.local_header(name, unix_ms, (0o100_000 | (mode & 0o7777)) << 16)
    }

    /// Counts `n` bytes of the open file as written.
    pub fn data(&mut self, n: u64) {
        self.offset += n;
    }

    /// The data descriptor closing the open file, whose bytes had `crc` and
    /// `size`.
    pub fn end_file(&mut self, crc: u32, size: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        put32(&mut out, 0x0807_4b50);
        put32(&mut out, crc);
        if size >= U32_MAX {
            put64(&mut out, size);
            put64(&mut out, size);
        } else {
            put32(&mut out, size as u32);
            put32(&mut out, size as u32);
        }
        if let Some(mut c) = self.open.take() {
            c.crc = crc;
            c.size = size;
            self.entries.push(c);
        }
        self.offset += out.len() as u64;
        out
    }

    /// An entry for folder `name` (ending in `/`).
    pub fn dir(&mut self, name: &str, unix_ms: i64, mode: u32) -> Vec<u8> {
        let mut out = self.local_header(name, unix_ms, ((0o040_000 | (mode & 0o7777)) << 16) | 0x10);
        out.extend(self.end_file(0, 0));
        out
    }

    /// The central directory and end records.
    pub fn finish(&mut self) -> Vec<u8> {
        let start = self.offset;
        let mut out = Vec::new();
        for c in &self.entries {
            let big_size = c.size >= U32_MAX;
            let big_offset = c.offset >= U32_MAX;
            let mut extra = Vec::new();
            if big_size || big_offset {
                let mut body = Vec::new();
                if big_size {
                    put64(&mut body, c.size);
                    put64(&mut body, c.size);
                }
                if big_offset {
                    put64(&mut body, c.offset);
                }
                put16(&mut extra, 0x0001);
                put16(&mut extra, body.len() as u16);
                extra.extend(body);
            }
            put32(&mut out, 0x0201_4b50);
            put16(&mut out, MADE_BY);
            put16(&mut out, VERSION);
            put16(&mut out, FLAGS);
            put16(&mut out, 0);
            put16(&mut out, c.dos_time);
            put16(&mut out, c.dos_date);
            put32(&mut out, c.crc);
            let size32 = if big_size { U32_MAX as u32 } else { c.size as u32 };
            put32(&mut out, size32);
            put32(&mut out, size32);
            put16(&mut out, c.name.len() as u16);
            put16(&mut out, extra.len() as u16);
            put16(&mut out, 0); // comment
            put16(&mut out, 0); // disk
            put16(&mut out, 0); // internal attributes
            put32(&mut out, c.external_attrs);
            put32(&mut out, if big_offset { U32_MAX as u32 } else { c.offset as u32 });
            out.extend_from_slice(&c.name);
            out.extend(extra);
        }
        let cd_size = out.len() as u64;
        let count = self.entries.len() as u64;
        if count >= 0xFFFF || start >= U32_MAX || cd_size >= U32_MAX {
            let zip64_end = start + cd_size;
            put32(&mut out, 0x0606_4b50);
            put64(&mut out, 44);
            put16(&mut out, MADE_BY);
            put16(&mut out, VERSION);
            put32(&mut out, 0);
            put32(&mut out, 0);
            put64(&mut out, count);
            put64(&mut out, count);
            put64(&mut out, cd_size);
            put64(&mut out, start);
            put32(&mut out, 0x0706_4b50);
            put32(&mut out, 0);
            put64(&mut out, zip64_end);
            put32(&mut out, 1);
        }
        put32(&mut out, 0x0605_4b50);
        put16(&mut out, 0);
        put16(&mut out, 0);
        put16(&mut out, count.min(0xFFFF) as u16);
        put16(&mut out, count.min(0xFFFF) as u16);
        put32(&mut out, cd_size.min(U32_MAX) as u32);
        put32(&mut out, start.min(U32_MAX) as u32);
        put16(&mut out, 0);
        self.offset += out.len() as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times_are_civil_utc() {
        // 2024-02-29 13:45:30 UTC
        let (t, d) = dos_time(1_709_214_330_000);
        assert_eq!((d >> 9, (d >> 5) & 15, d & 31), (44, 2, 29));
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (13, 45, 30));
        // Before 1980: clamped to its first day.
        assert_eq!(dos_time(0).1, (1 << 5) | 1);
    }

    /// An archive that `unzip -t` accepts and lists with the right names.
    #[test]
    fn archives_are_well_formed() {
        let mut z = ZipWriter::new();
        let mut out = z.dir("a/", 1_700_000_000_000, 0o755);
        for (name, body) in [
            ("a/x.txt", &b"hello"[..]),
            ("a/ü.bin", &[0u8, 1, 2][..]),
            ("e", &b""[..]),
        ] {
            out.extend(z.begin_file(name, 1_700_000_000_000, 0o644));
            out.extend_from_slice(body);
            z.data(body.len() as u64);
            out.extend(z.end_file(crc32fast::hash(body), body.len() as u64));
        }
        out.extend(z.finish());
        // The end record says where the directory is.
        let eocd = &out[out.len() - 22..];
        assert_eq!(&eocd[..4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([eocd[10], eocd[11]]), 4);
        let cd_offset = u32::from_le_bytes([eocd[16], eocd[17], eocd[18], eocd[19]]) as usize;
        assert_eq!(&out[cd_offset..cd_offset + 4], &0x0201_4b50u32.to_le_bytes());
        assert_eq!(z.offset, out.len() as u64);
    }
}
