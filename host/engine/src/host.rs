//! The per-call store data: WASI with nothing granted, the plugin's config and keyvalue store,
//! and the limiter that bounds its memory and handles.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

use crate::keyvalue::KvStore;

/// Host memory charged per live handle (an open file or directory, a stream, a pollable, a
/// keyvalue bucket) against the instance's memory limit: its table slot, the boxed host object
/// and the kernel's open file. A stream's in-flight buffer (at most 64 KiB, wasmtime-wasi's cap)
/// is not included.
pub const HANDLE_HOST_BYTES: usize = 4 << 10;

/// What one instance can reach. Built fresh for every call, so nothing leaks between calls.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    /// Every handle the guest holds; its capacity is the instance's handle budget.
    pub(crate) table: ResourceTable,
    pub(crate) config: Arc<WasiConfigVariables>,
    pub(crate) kv: Arc<KvStore>,
    pub(crate) memory: MemoryCap,
    /// For the refusals the host logs on the guest's behalf.
    pub(crate) plugin: Arc<str>,
}

/// Per-instance bounds the store enforces while the guest runs.
pub(crate) struct StoreLimits {
    pub(crate) memory_bytes: usize,
    pub(crate) max_handles: usize,
}

impl HostState {
    /// A store for one instance: `wasi` as granted, the plugin's config and keyvalue store, and
    /// linear memory plus handles capped by `limits`. The caller sets the epoch deadline.
    pub(crate) fn store(
        engine: &wasmtime::Engine,
        plugin: Arc<str>,
        wasi: WasiCtx,
        config: Arc<WasiConfigVariables>,
        kv: Arc<KvStore>,
        limits: StoreLimits,
    ) -> wasmtime::Store<HostState> {
        let mut table = ResourceTable::default();
        // Checked as each handle is created, so a guest that opens without end gets an error
        // (or, for a stream, a trap) at the budget instead of taking the process's descriptors.
        table.set_max_capacity(limits.max_handles);
        let state = HostState {
            wasi,
            table,
            config,
            kv,
            memory: MemoryCap {
                limit: limits.memory_bytes,
                hit: false,
            },
            plugin,
        };
        let mut store = wasmtime::Store::new(engine, state);
        store.limiter(|s| s);
        store
    }

    /// Handles the guest holds now.
    pub(crate) fn handles(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The memory limit, and whether it was hit, so an out-of-memory can be reported as such rather
/// than as whatever trap the guest's allocator turns it into.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
}

/// Linear memory and the host memory behind the guest's handles share one limit: growth that
/// would take both past it fails. Counting the handles only here keeps handle creation cheap;
/// the table's capacity bounds what they can add between two growths.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let handles = self.handles();
        let held = handles.saturating_mul(HANDLE_HOST_BYTES);
        if desired.saturating_add(held) > self.memory.limit {
            self.memory.hit = true;
            wasmtime::bail!(
                "memory limit of {} bytes exceeded ({held} of them for {handles} handles)",
                self.memory.limit
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
