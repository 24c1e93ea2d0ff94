//! The configuration keys, from `wasi:config/store` in the component.

/// Where configuration comes from: `wasi:config/store` in the component, a map in the tests.
pub trait Settings {
    /// The value of `key`; `Ok(None)` when the key is not set.
    fn get(&self, key: &str) -> Result<Option<String>, String>;
}

/// The value of `key`, trimmed; `Ok(None)` when the key is not set. The error names the key.
pub fn string(settings: &impl Settings, key: &str) -> Result<Option<String>, String> {
    settings
        .get(key)
        .map(|v| v.map(|s| s.trim().to_string()))
        .map_err(|e| format!("cannot read wasi:config key {key}: {e}"))
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
    fn string_trims_and_distinguishes_missing_from_empty() {
        let s = FakeSettings::with(&[("k", "  v "), ("e", "")]);
        assert_eq!(string(&s, "k"), Ok(Some("v".to_string())));
        assert_eq!(string(&s, "e"), Ok(Some(String::new())));
        assert_eq!(string(&s, "other"), Ok(None));
    }

    #[test]
    fn string_names_the_key_on_error() {
        let s = FakeSettings::failing("k", "boom");
        assert_eq!(
            string(&s, "k"),
            Err("cannot read wasi:config key k: boom".to_string())
        );
    }
}
