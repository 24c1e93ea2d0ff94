//! `wasi:filesystem/types` `open-at`, in place of wasmtime-wasi's, for the one directory a storage
//! plugin is granted. Resolution is the same (cap-primitives keeps every path beneath the
//! directory); what differs:
//!
//! - the open(2) is non-blocking and runs on tokio's blocking pool, and only regular files and
//!   directories reach the guest. A FIFO with no writer, a device or a socket that a pod or a
//!   volume put in the data dir would otherwise hold the open for ever; refused, the guest gets
//!   `not-permitted` and the daemon logs why;
//! - a descriptor that would take the instance past its handle budget (the store's
//!   [`ResourceTable`](wasmtime::component::ResourceTable) capacity) or the process within
//!   [`FD_RESERVE`] descriptors of its `RLIMIT_NOFILE` is closed again, and the guest gets
//!   `insufficient-memory`, so a plugin's hoard never starves CNI of descriptors.
//!
//! wasmtime-wasi builds its open options itself, so the non-blocking flag can only be had by
//! opening here. Everything else about descriptors (reads, writes, streams, stat) stays
//! wasmtime-wasi's, run on the blocking pool too since the engine no longer lets WASI block the
//! caller's thread.

use std::io;
use std::os::fd::AsRawFd;

use cap_primitives::fs::{FollowSymlinks, OpenOptions, OpenOptionsExt};
use wasmtime::component::{Linker, Resource, ResourceTableError};
use wasmtime_wasi::OpenMode;
use wasmtime_wasi::filesystem::{Descriptor, Dir, File};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
};

use crate::host::HostState;

/// Descriptors the daemon keeps for itself: a guest open that would leave fewer than this many
/// below the process's `RLIMIT_NOFILE` is refused, whatever its instance's budget.
pub const FD_RESERVE: u64 = 1024;

/// The interface as wasmtime-wasi 48 defines it; guests built against any 0.2.x link to it.
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces wasmtime-wasi's `open-at`; call after `wasmtime_wasi::p2::add_to_linker_async`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let out = open_at(store.data_mut(), fd, path_flags, path, oflags, flags).await?;
                Ok((out,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What the blocking open found.
enum Opened {
    Dir(std::fs::File),
    File(std::fs::File),
    NotDir,
    /// Not a regular file or a directory: its kind, for the log.
    Refused(&'static str),
    /// Opening it would leave the process within [`FD_RESERVE`] of its limit.
    Reserve(u64),
}

async fn open_at(
    state: &mut HostState,
    fd: Resource<Descriptor>,
    path_flags: PathFlags,
    path: String,
    oflags: OpenFlags,
    flags: DescriptorFlags,
) -> wasmtime::Result<Result<Resource<Descriptor>, ErrorCode>> {
    let dir = match state.table.get(&fd)? {
        Descriptor::Dir(d) => d.clone(),
        Descriptor::File(_) => return Ok(Err(ErrorCode::NotDirectory)),
    };
    // The flags and permission checks are wasmtime-wasi 48's `Dir::open_at`, unchanged.
    let mut opts = OpenOptions::new();
    let mut mode = OpenMode::empty();
    let create = oflags.contains(OpenFlags::CREATE);
    if create {
        if oflags.contains(OpenFlags::EXCLUSIVE) {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        opts.write(true);
        mode |= OpenMode::WRITE;
    }
    if oflags.contains(OpenFlags::TRUNCATE) {
        opts.truncate(true).write(true);
        mode |= OpenMode::WRITE;
    }
    if flags.contains(DescriptorFlags::READ) {
        opts.read(true);
        mode |= OpenMode::READ;
    }
    if flags.contains(DescriptorFlags::WRITE) {
        opts.write(true);
        mode |= OpenMode::WRITE;
    } else {
        // Opened for reading so the OS allows it; the perms refuse writes later.
        opts.read(true);
        mode |= OpenMode::READ;
    }
    // cap-primitives' documented way to set this is cap-fs-ext's trait over this same method.
    opts._cap_fs_ext_follow(if path_flags.contains(PathFlags::SYMLINK_FOLLOW) {
        FollowSymlinks::Yes
    } else {
        FollowSymlinks::No
    });
    if flags.contains(DescriptorFlags::FILE_INTEGRITY_SYNC)
        || flags.contains(DescriptorFlags::DATA_INTEGRITY_SYNC)
        || flags.contains(DescriptorFlags::REQUESTED_WRITE_SYNC)
    {
        return Ok(Err(ErrorCode::Unsupported));
    }
    let directory = oflags.contains(OpenFlags::DIRECTORY);
    if directory
        && (create || oflags.contains(OpenFlags::EXCLUSIVE) || oflags.contains(OpenFlags::TRUNCATE))
    {
        return Ok(Err(ErrorCode::Invalid));
    }
    if dir.perms.write_not_permitted() && (create || mode.contains(OpenMode::WRITE)) {
        return Ok(Err(ErrorCode::NotPermitted));
    }
    opts.custom_flags(libc::O_NONBLOCK);

    let start = dir.dir.clone();
    let rel = path.clone();
    let opened = tokio::task::spawn_blocking(move || -> io::Result<Opened> {
        let f = cap_primitives::fs::open(&start, rel.as_ref(), &opts)?;
        if let Some(limit) = near_fd_limit(&f) {
            return Ok(Opened::Reserve(limit));
        }
        let kind = f.metadata()?.file_type();
        Ok(if kind.is_dir() {
            Opened::Dir(f)
        } else if directory {
            Opened::NotDir
        } else if kind.is_file() {
            // Regular files ignore O_NONBLOCK on Linux, but a FUSE filesystem may not: give the
            // guest the blocking file it asked for.
            clear_nonblock(&f)?;
            Opened::File(f)
        } else {
            Opened::Refused(kind_name(&kind))
        })
    })
    .await
    .map_err(|e| io::Error::other(format!("open task failed: {e}")));

    let plugin = &state.plugin;
    let desc = match opened.and_then(|r| r) {
        Err(e) => return Ok(Err(ErrorCode::from(e))),
        Ok(Opened::NotDir) => return Ok(Err(ErrorCode::NotDirectory)),
        Ok(Opened::Refused(kind)) => {
            tracing::warn!(
                %plugin,
                path,
                "refused to open {path}: a {kind}, not a regular file or directory"
            );
            return Ok(Err(ErrorCode::NotPermitted));
        }
        Ok(Opened::Reserve(limit)) => {
            tracing::warn!(
                %plugin,
                path,
                "refused to open {path}: the daemon is within {FD_RESERVE} descriptors of its limit of {limit}"
            );
            return Ok(Err(ErrorCode::InsufficientMemory));
        }
        Ok(Opened::Dir(f)) => Descriptor::Dir(Dir::new(f, dir.perms, mode, false)),
        Ok(Opened::File(f)) => Descriptor::File(File::new(f, dir.perms, mode, false)),
    };
    match state.table.push(desc) {
        Ok(r) => Ok(Ok(r)),
        Err(ResourceTableError::Full) => {
            tracing::warn!(
                %plugin,
                path,
                "refused to open {path}: the instance holds its budget of {} handles",
                state.table.max_capacity()
            );
            Ok(Err(ErrorCode::InsufficientMemory))
        }
        Err(e) => Err(e.into()),
    }
}

/// `Some(limit)` when `f` is among the last [`FD_RESERVE`] descriptors under the process's soft
/// `RLIMIT_NOFILE`. Linux hands out the lowest free number, so a number that high means every
/// one below it is taken: a check with no count to keep.
fn near_fd_limit(f: &std::fs::File) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let limit = lim.rlim_cur;
    (f.as_raw_fd() as u64 >= limit.saturating_sub(FD_RESERVE)).then_some(limit)
}

fn clear_nonblock(f: &std::fs::File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // Safety: fcntl on a descriptor we own, with flag arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn kind_name(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}
