//! The per-call store data: WASI with nothing granted, the plugin's config and keyvalue store,
//! and the memory limiter.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

use crate::keyvalue::KvStore;

/// What one instance can reach. Built fresh for every call, so nothing leaks between calls.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) config: Arc<WasiConfigVariables>,
    pub(crate) kv: Arc<KvStore>,
    pub(crate) memory: MemoryCap,
}

impl HostState {
    /// A store for one instance: `wasi` as granted, the plugin's config and keyvalue store, and
    /// linear memory capped at `memory_bytes`. The caller sets the epoch deadline.
    pub(crate) fn store(
        engine: &wasmtime::Engine,
        wasi: WasiCtx,
        config: Arc<WasiConfigVariables>,
        kv: Arc<KvStore>,
        memory_bytes: usize,
    ) -> wasmtime::Store<HostState> {
        let state = HostState {
            wasi,
            table: ResourceTable::default(),
            config,
            kv,
            memory: MemoryCap {
                limit: memory_bytes,
                hit: false,
            },
        };
        let mut store = wasmtime::Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        store
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

/// Caps linear memory per instance and remembers that the cap was hit, so an out-of-memory can
/// be reported as such rather than as whatever trap the guest's allocator turns it into.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.limit);
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
