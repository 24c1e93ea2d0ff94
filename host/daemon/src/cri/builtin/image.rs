//! `runtime.v1.ImageService` for [`Builtin`]: a list of "pulled" references, nothing fetched.

use serde_json::json;
use tonic::{Request, Response, Status};
use wasmgate_proto::cri::v1 as pb;

use super::{Builtin, IMAGE_SIZE, Image, ROOT_DIR, State, batches, sha256_hex};

type Batches<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

/// A parsed, normalised image reference (`busybox` → `docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub name: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_digest(d: &str) -> bool {
    match d.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64 && is_lower_hex(hex),
        Some(("sha384", hex)) => hex.len() == 96 && is_lower_hex(hex),
        Some(("sha512", hex)) => hex.len() == 128 && is_lower_hex(hex),
        Some((algo, hex)) => {
            !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or `-`s.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

/// A registry host (DNS name, IPv4 or `[IPv6]`) with an optional `:port`.
fn valid_domain(d: &str) -> bool {
    if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, tail)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = tail.is_empty() || tail.strip_prefix(':').is_some_and(valid_port);
        return !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') && port_ok;
    }
    let (host, port_ok) = match d.split_once(':') {
        Some((h, p)) => (h, valid_port(p)),
        None => (d, true),
    };
    port_ok
        && !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

impl Reference {
    /// Parses and normalises `s` the way the docker reference grammar does: a missing domain
    /// is `docker.io`, a single-component docker.io path goes under `library/`, and a reference
    /// with neither tag nor digest gets `:latest`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty image reference".into());
        }
        if s.len() == 64 && is_lower_hex(s) {
            return Err(format!(
                "invalid image reference {s:?}: cannot specify 64-byte hexadecimal strings"
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(format!("invalid image reference {s:?}: bad digest {d:?}"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(format!("invalid image reference {s:?}: bad tag {t:?}"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest.to_string())
            }
            _ => ("docker.io", name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io"
        } else {
            domain
        };
        if !valid_domain(domain) {
            return Err(format!(
                "invalid image reference {s:?}: bad registry {domain:?}"
            ));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "invalid image reference {s:?}: repository name must be lowercase"
            ));
        }
        if !path.split('/').all(valid_component) {
            return Err(format!(
                "invalid image reference {s:?}: bad repository name"
            ));
        }
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            name: format!("{domain}/{path}"),
            tag,
            digest,
        })
    }

    /// `name:tag`, if tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name))
    }

    /// `name@digest`, if digested.
    pub fn digested(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{d}", self.name))
    }
}

impl State {
    /// The id of the image `spec` names: an image id (with or without `sha256:`), a reference
    /// (normalised, matched against the tags and digests of pulled images), or a unique prefix
    /// of an id, tried in that order.
    pub(super) fn find_image(&self, spec: &str) -> Option<String> {
        if spec.is_empty() {
            return None;
        }
        if self.images.contains_key(spec) {
            return Some(spec.to_string());
        }
        let full = format!("sha256:{spec}");
        if self.images.contains_key(&full) {
            return Some(full);
        }
        if let Ok(r) = Reference::parse(spec) {
            let (s, tagged, digested) = (r.to_string(), r.tagged(), r.digested());
            let hit = self.images.values().find(|i| {
                i.reference == s
                    || tagged.as_ref().is_some_and(|t| i.repo_tags.contains(t))
                    || digested
                        .as_ref()
                        .is_some_and(|d| i.repo_digests.contains(d))
            });
            if let Some(i) = hit {
                return Some(i.id.clone());
            }
        }
        let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
        if is_lower_hex(hex) {
            let prefix = format!("sha256:{hex}");
            let mut found = self.images.keys().filter(|k| k.starts_with(&prefix));
            if let (Some(k), None) = (found.next(), found.next()) {
                return Some(k.clone());
            }
        }
        None
    }

    fn image_item(&self, i: &Image) -> pb::Image {
        pb::Image {
            id: i.id.clone(),
            repo_tags: i.repo_tags.clone(),
            repo_digests: i.repo_digests.clone(),
            size: IMAGE_SIZE,
            uid: None,
            username: String::new(),
            spec: Some(pb::ImageSpec {
                image: i.id.clone(),
                annotations: i.annotations.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }

    fn list_images(&self, f: Option<pb::ImageFilter>) -> Vec<pb::Image> {
        let want = f
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let only = match &want {
            Some(s) => match self.find_image(s) {
                Some(id) => Some(id),
                None => return Vec::new(),
            },
            None => None,
        };
        let mut v: Vec<&Image> = self
            .images
            .values()
            .filter(|i| only.as_ref().is_none_or(|id| *id == i.id))
            .collect();
        v.sort_by_key(|i| i.seq);
        v.into_iter().map(|i| self.image_item(i)).collect()
    }
}

fn image_spec(spec: Option<pb::ImageSpec>) -> Result<pb::ImageSpec, Status> {
    spec.filter(|s| !s.image.is_empty())
        .ok_or_else(|| Status::invalid_argument("image.image is required"))
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for Builtin {
    async fn list_images(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let images = self.lock().list_images(req.into_inner().filter);
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    type StreamImagesStream = Batches<pb::StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<pb::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let images = self.lock().list_images(req.into_inner().filter);
        Ok(Response::new(tokio_stream::iter(batches(
            images,
            |images| pb::StreamImagesResponse { images },
        ))))
    }

    async fn image_status(
        &self,
        req: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let spec = image_spec(req.image)?;
        let st = self.lock();
        // CRI: an image that is not present is a response with no image, not an error.
        let Some(id) = st.find_image(&spec.image) else {
            return Ok(Response::new(pb::ImageStatusResponse::default()));
        };
        let img = &st.images[&id];
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let v = json!({
                "id": img.id,
                "reference": img.reference,
                "pulledAt": img.pulled_at,
                "size": IMAGE_SIZE,
                "runtimeType": super::RUNTIME_NAME,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(pb::ImageStatusResponse {
            image: Some(st.image_item(img)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        // Credentials (req.auth) are ignored: nothing is fetched.
        let req = req.into_inner();
        let spec = image_spec(req.image)?;
        if !spec.runtime_handler.is_empty() {
            self.check_handler(&spec.runtime_handler)?;
        }
        if spec.image.starts_with("sha256:") {
            let st = self.lock();
            return match st.images.get(&spec.image) {
                Some(i) => Ok(Response::new(pb::PullImageResponse {
                    image_ref: i.id.clone(),
                })),
                None => Err(Status::invalid_argument(format!(
                    "cannot pull image {:?}: an image id is not a reference",
                    spec.image
                ))),
            };
        }
        let r = Reference::parse(&spec.image).map_err(Status::invalid_argument)?;
        let reference = r.to_string();
        let id = format!("sha256:{}", sha256_hex(reference.as_bytes()));
        let image_ref = self.with(|st| {
            if !st.images.contains_key(&id) {
                let digested = r.digested().unwrap_or_else(|| {
                    let manifest = sha256_hex(format!("manifest:{reference}").as_bytes());
                    format!("{}@sha256:{manifest}", r.name)
                });
                let seq = st.next_seq();
                let pulled_at = st.now();
                st.images.insert(
                    id.clone(),
                    Image {
                        id: id.clone(),
                        seq,
                        reference: reference.clone(),
                        repo_tags: r.tagged().into_iter().collect(),
                        repo_digests: vec![digested],
                        annotations: spec.annotations.clone(),
                        pulled_at,
                    },
                );
            }
            Ok(id.clone())
        })?;
        Ok(Response::new(pb::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let spec = image_spec(req.into_inner().image)?;
        // Idempotent: removing an absent image is OK. Images in use may be removed too (as
        // containerd allows); containers keep their image id.
        let mut st = self.lock();
        if let Some(id) = st.find_image(&spec.image) {
            st.images.remove(&id);
        }
        Ok(Response::new(pb::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<pb::ImageFsInfoRequest>,
    ) -> Result<Response<pb::ImageFsInfoResponse>, Status> {
        let mut st = self.lock();
        let ts = st.now();
        let n = st.images.len() as u64;
        Ok(Response::new(pb::ImageFsInfoResponse {
            image_filesystems: vec![pb::FilesystemUsage {
                timestamp: ts,
                fs_id: Some(pb::FilesystemIdentifier {
                    mountpoint: ROOT_DIR.to_string(),
                }),
                used_bytes: Some(pb::UInt64Value {
                    value: n * IMAGE_SIZE,
                }),
                inodes_used: Some(pb::UInt64Value { value: n }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}
