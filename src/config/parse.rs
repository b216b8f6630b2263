//! Deserializers for values whose TOML and environment spellings differ
//! from their types.

use std::net::SocketAddr;

use secrecy::SecretString;
use serde::{de, Deserialize, Deserializer};

/// A `host:port` with an IP host.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(de)?;
    text.parse().map_err(|_| {
        de::Error::invalid_value(de::Unexpected::Str(&text), &"host:port with an IP host")
    })
}

/// An optional `host:port` with an IP host.
pub(super) fn opt_socket_addr<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(de).map(Some)
}

/// A list from TOML, or a comma-separated string from the environment.
pub(super) fn list_or_csv<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(de)? {
        ListOrCsv::List(items) => items.into_iter().map(SecretString::from).collect(),
        ListOrCsv::Csv(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect(),
    })
}
