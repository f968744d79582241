//! Serde helpers: maps with unique keys, policy versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serializer};

use crate::verdict::PolicyVersion;

pub(crate) use crate::boundary::spec::unique_keys;

/// [`unique_keys`] for an optional map.
pub(crate) fn unique_keys_opt<'de, D, V>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    unique_keys(d).map(Some)
}

/// [`PolicyVersion`] as its 64 hex digits (the form its own `Serialize` writes), both ways.
pub(crate) mod policy_version {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &PolicyVersion, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PolicyVersion, D::Error> {
        let s = String::deserialize(d)?;
        crate::hex::decode_array::<32>(&s)
            .map(PolicyVersion)
            .ok_or_else(|| {
                serde::de::Error::custom("a policy version must be 64 hexadecimal digits")
            })
    }
}
