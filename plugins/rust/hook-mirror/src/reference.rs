//! Image references, normalised the way Docker (`distribution/reference`) does.
//!
//! - `busybox`, `library/busybox`, `docker.io/library/busybox` and `index.docker.io/busybox` all
//!   name `docker.io/library/busybox`.
//! - The first path component is a registry host only when it contains `.` or `:`, is
//!   `localhost`, or has an upper-case letter. Otherwise the whole name is a Docker Hub repository:
//!   `myorg/app` is `docker.io/myorg/app`.
//! - The tag and digest (`:1.36`, `@sha256:…`, or both) are kept verbatim.
//! - An image ID (`sha256:<hex>` or 64 bare hex digits) is not a name and is never parsed as one.

/// A name reference split into registry host, repository path and what follows the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Lower case; `index.docker.io` is `docker.io`.
    pub domain: String,
    /// With `library/` added for official Docker Hub images.
    pub path: String,
    /// `""`, `:tag`, `@digest` or `:tag@digest`, as written.
    pub suffix: String,
}

pub const DOCKER_HUB: &str = "docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";

impl Reference {
    /// `None` for an image ID or anything that is not a well-formed name reference.
    pub fn parse(image: &str) -> Option<Reference> {
        if is_image_id(image) {
            return None;
        }
        let (domain, remainder) = match image.split_once('/') {
            Some((first, rest)) if looks_like_domain(first) => (first, rest),
            _ => (DOCKER_HUB, image),
        };
        let domain = normalise_domain(domain);
        if !valid_domain(&domain) {
            return None;
        }

        let (name_tag, digest) = match remainder.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (remainder, None),
        };
        let (name, tag) = match name_tag.split_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (name_tag, None),
        };
        if !valid_path(name) || !tag.is_none_or(valid_tag) || !digest.is_none_or(valid_digest) {
            return None;
        }

        let path = if domain == DOCKER_HUB && !name.contains('/') {
            format!("{OFFICIAL_PREFIX}{name}")
        } else {
            name.to_string()
        };
        Some(Reference {
            domain,
            path,
            suffix: remainder[name.len()..].to_string(),
        })
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}{}", self.domain, self.path, self.suffix)
    }
}

/// A registry host with an optional repository path prefix, `host[:port][/prefix]`: the `from`
/// and `to` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub domain: String,
    pub prefix: String,
}

impl Location {
    pub fn parse(text: &str) -> Result<Location, String> {
        let trimmed = text.trim();
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let (domain, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        // The host must read as a host, or the rewritten reference would be a Docker Hub path.
        if !looks_like_domain(domain) || !valid_domain(&normalise_domain(domain)) {
            return Err(format!(
                "{text:?} is not a registry host (with `.` or `:`, or `localhost`), optionally followed by /path"
            ));
        }
        if !prefix.is_empty() && !valid_path(prefix) {
            return Err(format!("{text:?} has an invalid repository path"));
        }
        Ok(Location {
            domain: normalise_domain(domain),
            prefix: prefix.to_string(),
        })
    }

    /// The repository path below this location, when `reference` lies under it. A prefix
    /// matches whole path components only.
    fn strip<'a>(&self, reference: &'a Reference) -> Option<&'a str> {
        if reference.domain != self.domain {
            return None;
        }
        if self.prefix.is_empty() {
            return Some(&reference.path);
        }
        reference
            .path
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
    }

    fn join(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            format!("{}/{path}", self.domain)
        } else {
            format!("{}/{}/{path}", self.domain, self.prefix)
        }
    }
}

/// `image` moved from under `from` to under `to`, keeping the rest of the path, the tag and the
/// digest. `None` when `image` is not under `from`, is an image ID or is malformed, or when the
/// result names the same image.
pub fn rewrite(image: &str, from: &Location, to: &Location) -> Option<String> {
    let reference = Reference::parse(image)?;
    let rest = from.strip(&reference)?;
    let new = format!("{}{}", to.join(rest), reference.suffix);
    if Reference::parse(&new).as_ref() == Some(&reference) {
        return None;
    }
    Some(new)
}

/// `sha256:<hex>` (or sha384, sha512) or 64 bare hex digits: an image ID, as Docker's
/// `ParseAnyReference` tells them from names.
pub fn is_image_id(image: &str) -> bool {
    let (len, hex) = match image.split_once(':') {
        Some(("sha256", hex)) => (64, hex),
        Some(("sha384", hex)) => (96, hex),
        Some(("sha512", hex)) => (128, hex),
        Some(_) => return false,
        None => (64, image),
    };
    hex.len() == len && is_lower_hex(hex)
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn normalise_domain(domain: &str) -> String {
    let lower = domain.to_ascii_lowercase();
    if lower == LEGACY_DOCKER_HUB {
        DOCKER_HUB.to_string()
    } else {
        lower
    }
}

/// `host[:port]`, where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        let v6_ok = !v6.is_empty() && v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        (v6_ok, port)
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (valid_host(host), Some(port)),
            None => (valid_host(domain), None),
        }
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Dot-separated labels of alphanumerics and inner dashes.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Repository path components: lower-case alphanumerics separated by `.`, `_`, `__` or dashes.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|component| {
            let bytes = component.as_bytes();
            !component.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && component
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `algorithm:hex`, with at least 32 hex digits.
fn valid_digest(digest: &str) -> bool {
    match digest.split_once(':') {
        Some((alg, hex)) => {
            alg.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && alg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parsed(image: &str) -> String {
        Reference::parse(image)
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    fn loc(text: &str) -> Location {
        Location::parse(text).unwrap()
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        assert_eq!(parsed("busybox"), "docker.io/library/busybox");
        assert_eq!(parsed("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(parsed("library/busybox"), "docker.io/library/busybox");
        assert_eq!(parsed("docker.io/busybox"), "docker.io/library/busybox");
        assert_eq!(
            parsed("index.docker.io/busybox"),
            "docker.io/library/busybox"
        );
        assert_eq!(parsed("myorg/app:v1"), "docker.io/myorg/app:v1");
        assert_eq!(
            parsed(&format!("docker.io/busybox@{DIGEST}")),
            format!("docker.io/library/busybox@{DIGEST}")
        );
        assert_eq!(
            parsed(&format!("busybox:1.36@{DIGEST}")),
            format!("docker.io/library/busybox:1.36@{DIGEST}")
        );
    }

    #[test]
    fn registry_hosts_are_recognised() {
        assert_eq!(
            parsed("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(parsed("localhost/app"), "localhost/app");
        assert_eq!(parsed("localhost:5000/a/b:c"), "localhost:5000/a/b:c");
        assert_eq!(parsed("Registry.Example/app"), "registry.example/app");
        assert_eq!(parsed("[::1]:5000/app"), "[::1]:5000/app");
        assert_eq!(parsed("10.0.0.1:5000/app"), "10.0.0.1:5000/app");
    }

    #[test]
    fn image_ids_and_malformed_references_do_not_parse() {
        assert!(is_image_id(DIGEST));
        assert!(is_image_id(&DIGEST[7..]));
        assert!(!is_image_id("app:0123456789abcdef0123456789abcdef"));
        assert!(!is_image_id("busybox:1.36"));
        for bad in [
            "",
            DIGEST,
            &DIGEST[7..],
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "a//b",
            "docker.io/",
            "busy box",
            "-x/y",
            "host..name/app",
            "host:port/app",
        ] {
            assert_eq!(Reference::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn locations_parse() {
        assert_eq!(
            loc(" docker.io/ "),
            Location {
                domain: "docker.io".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            loc("index.docker.io/library"),
            Location {
                domain: "docker.io".into(),
                prefix: "library".into()
            }
        );
        assert_eq!(
            loc("Mirror.Local:5000/hub/cache"),
            Location {
                domain: "mirror.local:5000".into(),
                prefix: "hub/cache".into()
            }
        );
        for bad in [
            "",
            "mirror",
            "mirror/hub",
            "https://mirror.local",
            "mirror.local/Hub",
            "a..b",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rewrites_docker_hub_in_every_spelling() {
        let (from, to) = (loc("docker.io"), loc("mirror.local:5000"));
        for (image, want) in [
            ("busybox", "mirror.local:5000/library/busybox"),
            ("library/busybox", "mirror.local:5000/library/busybox"),
            (
                "docker.io/library/busybox:1.36",
                "mirror.local:5000/library/busybox:1.36",
            ),
            ("myorg/app:v1", "mirror.local:5000/myorg/app:v1"),
        ] {
            assert_eq!(rewrite(image, &from, &to).as_deref(), Some(want), "{image}");
        }
        assert_eq!(
            rewrite(&format!("docker.io/busybox@{DIGEST}"), &from, &to),
            Some(format!("mirror.local:5000/library/busybox@{DIGEST}"))
        );
    }

    #[test]
    fn rewrites_other_registries_and_prefixes() {
        let to = loc("mirror.local/k8s");
        assert_eq!(
            rewrite("registry.k8s.io/pause:3.9", &loc("registry.k8s.io"), &to).as_deref(),
            Some("mirror.local/k8s/pause:3.9")
        );
        // A prefix matches whole components only.
        let from = loc("docker.io/bitnami");
        assert_eq!(
            rewrite("bitnami/redis:7", &from, &loc("mirror.local")).as_deref(),
            Some("mirror.local/redis:7")
        );
        assert_eq!(
            rewrite("bitnamilabs/redis", &from, &loc("mirror.local")),
            None
        );
        assert_eq!(rewrite("bitnami", &from, &loc("mirror.local")), None);
    }

    #[test]
    fn leaves_other_registries_ids_and_no_ops_alone() {
        let (from, to) = (loc("docker.io"), loc("mirror.local"));
        assert_eq!(rewrite("registry.k8s.io/pause:3.9", &from, &to), None);
        assert_eq!(rewrite("quay.io/docker.io/x", &from, &to), None);
        assert_eq!(rewrite(DIGEST, &from, &to), None);
        assert_eq!(rewrite("Not A Reference", &from, &to), None);
        // The result would name the same image.
        assert_eq!(rewrite("busybox", &from, &loc("index.docker.io")), None);
        assert_eq!(
            rewrite(
                "mirror.local/app",
                &loc("mirror.local"),
                &loc("mirror.local")
            ),
            None
        );
    }

    #[test]
    fn rewriting_to_docker_hub_qualifies_fully() {
        assert_eq!(
            rewrite(
                "quay.io/prometheus/node-exporter:v1",
                &loc("quay.io"),
                &loc("docker.io")
            )
            .as_deref(),
            Some("docker.io/prometheus/node-exporter:v1")
        );
    }
}
