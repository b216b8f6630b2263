//! Where an address is: an optional MaxMind-format database (GeoIP2 or
//! GeoLite2, City or Country edition), read into memory once at startup.
//!
//! # Contract
//!
//! - [`GeoDb::open`] is the only fallible step: a file that is missing,
//!   unreadable or not a MaxMind DB is an error whose message names the path
//!   and says what is wrong, for the operator to fix.
//! - [`GeoDb::locate`] never fails and never panics. An address the database
//!   does not cover, a record that does not decode as a GeoIP2 City record,
//!   or an IPv6 address in an IPv4-only database gives [`Place::default`]
//!   (both fields `None`); so does a field the record lacks (a Country
//!   database has no city).
//! - A [`Place`] holds the country's ISO 3166-1 code and the city's English
//!   name, each cut to at most [`MAX_FIELD_BYTES`] bytes on a character
//!   boundary: what the database says is data, not trusted to be small.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::{geoip2, Reader};

/// The longest a [`Place`] field can be, in bytes.
pub const MAX_FIELD_BYTES: usize = 64;

/// A MaxMind-format (GeoIP2 / GeoLite2 City or Country) database, opened once.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

/// Where an address is, as far as the database knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The country's ISO 3166-1 alpha-2 code (`"DE"`), if the database has it.
    pub country: Option<String>,
    /// The city's English name (`"Berlin"`), if the database has it.
    pub city: Option<String>,
}

impl GeoDb {
    /// Open the file at `path`; an error message saying what is wrong
    /// (missing, unreadable, not a MaxMind DB, ...).
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("GeoIP database {}: cannot read it: {e}", path.display()))?;
        let reader = Reader::from_source(bytes).map_err(|e| {
            format!(
                "GeoIP database {}: not a usable MaxMind DB (GeoIP2/GeoLite2) file: {e}",
                path.display()
            )
        })?;
        Ok(GeoDb { reader })
    }

    /// The country's ISO code and the city's English name, where the database
    /// has them; [`Place::default`] for an address it does not cover or a
    /// record it cannot decode.
    pub fn locate(&self, ip: IpAddr) -> Place {
        let Ok(found) = self.reader.lookup(ip) else {
            return Place::default();
        };
        match found.decode::<geoip2::City<'_>>() {
            Ok(Some(record)) => Place {
                country: record.country.iso_code.map(capped),
                city: record.city.names.english.map(capped),
            },
            Ok(None) | Err(_) => Place::default(),
        }
    }
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.reader.metadata();
        f.debug_struct("GeoDb")
            .field("database_type", &meta.database_type)
            .field("ip_version", &meta.ip_version)
            .field("build_epoch", &meta.build_epoch)
            .finish_non_exhaustive()
    }
}

/// `s` cut to at most [`MAX_FIELD_BYTES`] bytes, on a character boundary.
fn capped(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.mmdb");
        let err = GeoDb::open(&path).unwrap_err();
        assert!(err.contains("absent.mmdb"), "{err}");
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_an_mmdb_is_an_error_saying_so() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"this is not a MaxMind database\n").unwrap();
        let err = GeoDb::open(file.path()).unwrap_err();
        assert!(err.contains("not a usable MaxMind DB"), "{err}");
        assert!(err.contains("metadata"), "{err}");
    }

    #[test]
    fn a_marker_with_garbage_metadata_is_an_error() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"\0\0\0\0\0\0\xAB\xCD\xEFMaxMind.com\xFF\xFF")
            .unwrap();
        let err = GeoDb::open(file.path()).unwrap_err();
        assert!(err.contains("not a usable MaxMind DB"), "{err}");
    }

    #[test]
    fn fields_are_capped_on_a_char_boundary() {
        assert_eq!(capped("Berlin"), "Berlin");
        assert_eq!(capped(&"a".repeat(64)).len(), 64);
        assert_eq!(capped(&"a".repeat(200)).len(), 64);
        // 'é' is two bytes: 63 ASCII bytes then 'é' would end at byte 65.
        let s = format!("{}é", "a".repeat(63));
        assert_eq!(capped(&s), "a".repeat(63));
        let s = "日".repeat(30); // 3 bytes each: 21 fit in 64 (63 bytes).
        assert_eq!(capped(&s), "日".repeat(21));
    }
}
