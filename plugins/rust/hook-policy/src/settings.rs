//! The configuration keys, from `wasi:config/store` in the component.

/// Where configuration comes from: `wasi:config/store` in the component, a map in the tests.
pub trait Settings {
    /// The value of `key`; `Ok(None)` when the key is not set.
    fn get(&self, key: &str) -> Result<Option<String>, String>;
}

/// A list separated by commas and/or whitespace; empty entries are dropped, so `""` is the empty
/// list. `Ok(None)` when the key is not set.
///
/// Whitespace separates too because the stock wasmtime CLI splits `-S` options at commas, so
/// `-S config-var=allowed-namespaces=a,b` cannot pass a comma; `-S "config-var=…=a b"` can.
pub fn list(settings: &impl Settings, key: &str) -> Result<Option<Vec<String>>, String> {
    let value = settings
        .get(key)
        .map_err(|e| format!("cannot read wasi:config key {key}: {e}"))?;
    Ok(value.map(|v| split_list(&v)))
}

pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
pub mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Settings from a map; a key mapped to `Err` fails to read.
    #[derive(Default)]
    pub struct FakeSettings(pub BTreeMap<String, Result<String, String>>);

    impl FakeSettings {
        pub fn with(pairs: &[(&str, &str)]) -> Self {
            FakeSettings(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Ok(v.to_string())))
                    .collect(),
            )
        }

        pub fn failing(key: &str, msg: &str) -> Self {
            let mut map = BTreeMap::new();
            map.insert(key.to_string(), Err(msg.to_string()));
            FakeSettings(map)
        }
    }

    impl Settings for FakeSettings {
        fn get(&self, key: &str) -> Result<Option<String>, String> {
            self.0.get(key).cloned().transpose()
        }
    }

    #[test]
    fn split_list_trims_and_drops_empty_entries() {
        assert_eq!(split_list(" a, b ,,c,"), vec!["a", "b", "c"]);
        assert_eq!(split_list(""), Vec::<String>::new());
        assert_eq!(split_list(" , "), Vec::<String>::new());
        assert_eq!(split_list("a b\tc, d"), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn list_distinguishes_missing_from_empty() {
        let s = FakeSettings::with(&[("k", "")]);
        assert_eq!(list(&s, "k"), Ok(Some(vec![])));
        assert_eq!(list(&s, "other"), Ok(None));
    }

    #[test]
    fn list_names_the_key_on_error() {
        let s = FakeSettings::failing("k", "boom");
        assert_eq!(
            list(&s, "k"),
            Err("cannot read wasi:config key k: boom".to_string())
        );
    }
}
