//! [`Netlink`]: the real [`NetworkEffects`], carrying out a validated plan with rtnetlink.
//!
//! The "host" is the network namespace of the calling thread; in the daemon that is the
//! process's own. The container side is reached by netlink socket: a socket stays bound to the
//! netns it was created in, so each call opens one from a fresh thread that has `setns`'d into
//! the target netns first. Threads of a shared pool never change namespace. Each socket is driven
//! by a current-thread tokio runtime owned by the call, so nothing assumes an ambient runtime;
//! this also means the methods must not be called from inside async code (use `spawn_blocking`).
//!
//! An apply costs one netlink connection per namespace and no processes:
//!
//! 1. host: make sure the bridge exists and is up, with its addresses (when the plan has one);
//! 2. host: create the veth in one request, host end already up and in its bridge, MTU on both
//!    ends, and the peer created directly in the container netns under its final name. There is
//!    no temporary name, no move and no rename: the kernel builds both ends or neither;
//! 3. concurrently: the container thread sets the interface and `lo` up and adds the addresses,
//!    then the routes, while this thread adds the host veth's addresses and routes.
//!
//! On failure after step 2 the host veth is deleted, which deletes its peer as well.

use std::fmt::Display;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::thread;

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteScope,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use wasmgate_cni::plan::{Attachment, Bridge, Target};

use crate::validate::{ParsedPlan, RouteSpec};
use crate::{Applied, EffectError, NetworkEffects};

/// The kernel-backed [`NetworkEffects`]. Stateless; every call opens its own sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct Netlink;

impl Netlink {
    pub fn new() -> Self {
        Netlink
    }
}

impl NetworkEffects for Netlink {
    fn apply(&self, target: &Target, plan: &Attachment) -> Result<Applied, EffectError> {
        let parsed = ParsedPlan::parse(plan)?;
        let ns = open_netns(&target.netns)?;
        let host = Conn::open()?;
        let host_name = plan.veth.host_name.as_str();

        let bridge = match &plan.bridge {
            Some(b) => Some(host.run(ensure_bridge(&host.handle, b, &parsed.bridge_addresses))?),
            None => None,
        };
        host.run(create_veth(&host.handle, target, plan, &ns, bridge))?;

        // The veth exists from here on: every failure must delete it again.
        let (container, host_side) = with_netns_thread(
            &ns,
            &target.netns,
            || {
                let conn = Conn::open()?;
                conn.run(configure_container(&conn.handle, target, &parsed))
            },
            || host.run(configure_host(&host.handle, host_name, &parsed)),
        );
        let built = container.and_then(|(container_mac, container_ifindex)| {
            let (host_mac, host_ifindex) = host_side?;
            Ok(Applied {
                host_mac,
                container_mac,
                host_ifindex,
                container_ifindex,
            })
        });
        if built.is_err()
            && let Err(e) = host.run(delete_link(&host.handle, host_name))
        {
            tracing::warn!(host_veth = host_name, error = %e, "cannot undo a failed apply");
        }
        built
    }

    fn remove(
        &self,
        _target: &Target,
        plan: &Attachment,
        built: Option<&Applied>,
    ) -> Result<(), EffectError> {
        let host = Conn::open()?;
        host.run(remove_host_veth(&host.handle, plan, built))
    }

    fn detach(
        &self,
        _target: &Target,
        plan: &Attachment,
        built: Option<&Applied>,
    ) -> Result<(), EffectError> {
        let host = Conn::open()?;
        host.run(set_host_veth_down(&host.handle, plan, built))
    }

    fn verify(&self, target: &Target, plan: &Attachment) -> Result<(), EffectError> {
        let parsed = ParsedPlan::parse(plan)?;
        let ns = open_netns(&target.netns)?;
        let host = Conn::open()?;
        let (container, host_side) = with_netns_thread(
            &ns,
            &target.netns,
            || {
                let conn = Conn::open()?;
                conn.run(check_container(&conn.handle, target, &parsed))
            },
            || host.run(check_host(&host.handle, plan)),
        );
        container.and(host_side)
    }
}

/// One rtnetlink connection in the netns of the thread that opened it, with its own runtime.
struct Conn {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Conn {
    fn open() -> Result<Self, EffectError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| EffectError::Netlink(format!("cannot start a netlink runtime: {e}")))?;
        // The socket registers with the runtime's reactor, so it must be made inside it.
        let (connection, handle, _) = {
            let _entered = rt.enter();
            rtnetlink::new_connection()
                .map_err(|e| EffectError::Netlink(format!("cannot open a netlink socket: {e}")))?
        };
        rt.spawn(connection);
        Ok(Conn { rt, handle })
    }

    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(f)
    }
}

/// Sets `lo` up in the netns of the calling thread, which must be one that thread alone is in
/// (see [`crate::netns`]): the socket is opened where the thread is.
pub(crate) fn loopback_up(netns: &str) -> Result<(), EffectError> {
    let conn = Conn::open()?;
    conn.run(async {
        conn.handle
            .link()
            .change(LinkUnspec::new_with_name("lo").up().build())
            .execute()
            .await
            .map_err(|e| nl(format_args!("set lo up in netns {netns:?}"), e))
    })
}

/// Runs `inside` on a new thread that has entered the netns `ns`, and `here` on this thread at
/// the same time. The worker thread ends with the call, taking its namespace with it.
fn with_netns_thread<A: Send, B>(
    ns: &File,
    path: &str,
    inside: impl FnOnce() -> Result<A, EffectError> + Send,
    here: impl FnOnce() -> B,
) -> (Result<A, EffectError>, B) {
    thread::scope(|s| {
        let worker = thread::Builder::new()
            .name("wasmgate-netns".into())
            .spawn_scoped(s, || {
                setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| EffectError::netns(path, e))?;
                inside()
            });
        let b = here();
        let a = match worker {
            Ok(worker) => worker.join().unwrap_or_else(|_| {
                Err(EffectError::Netlink(format!(
                    "worker for netns {path:?} panicked"
                )))
            }),
            Err(e) => Err(EffectError::Netlink(format!(
                "cannot start a thread for netns {path:?}: {e}"
            ))),
        };
        (a, b)
    })
}

/// Opens the pod's netns at `path` for ADD or CHECK; see [`open_pod_netns`].
fn open_netns(path: &str) -> Result<File, EffectError> {
    if path.is_empty() {
        return Err(EffectError::netns(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "no netns path given"),
        ));
    }
    open_pod_netns(path)
}

/// Opens `path` as a pod's network namespace, refusing a relative path and the host's own
/// namespace: a "container" side plumbed there, with the routes a plugin may set freely inside a
/// pod, would land in the node itself. The namespace is told by the opened file's device and
/// inode, so a bind mount or another `/proc/<pid>/ns/net` of the host is refused too, and the
/// file returned is the one that was checked (no swap between check and use).
pub fn open_pod_netns(path: &str) -> Result<File, EffectError> {
    if !path.starts_with('/') {
        return Err(EffectError::NotPodNetns {
            path: path.to_string(),
            why: "is a relative path".into(),
        });
    }
    let file = File::open(path).map_err(|e| EffectError::netns(path, e))?;
    refuse_host_netns(path, &file)?;
    Ok(file)
}

fn refuse_host_netns(path: &str, file: &File) -> Result<(), EffectError> {
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata().map_err(|e| EffectError::netns(path, e))?;
    let hosts = [
        (
            "/proc/thread-self/ns/net",
            "the daemon's own network namespace",
        ),
        ("/proc/self/ns/net", "the daemon's own network namespace"),
        ("/proc/1/ns/net", "the network namespace of pid 1"),
    ];
    for (host, what) in hosts {
        // A host path we cannot stat (no /proc/1 in a pid namespace) is not one to compare.
        if let Ok(h) = std::fs::metadata(host)
            && h.dev() == opened.dev()
            && h.ino() == opened.ino()
        {
            return Err(EffectError::NotPodNetns {
                path: path.to_string(),
                why: format!("is {what}, not a pod's"),
            });
        }
    }
    Ok(())
}

// ---- apply ----

async fn ensure_bridge(
    h: &Handle,
    bridge: &Bridge,
    addresses: &[IpNet],
) -> Result<u32, EffectError> {
    let name = bridge.name.as_str();
    let link = match link_by_name(h, name)
        .await
        .map_err(|e| nl(format_args!("look up bridge {name:?}"), e))?
    {
        Some(link) => link,
        None => {
            let mut req = LinkBridge::new(name);
            if let Some(mtu) = bridge.mtu {
                req = req.mtu(mtu);
            }
            match h.link().add(req.build()).execute().await {
                // EEXIST: a concurrent call created it first, which is just as good.
                Err(e) if errno(&e) != Some(Errno::EEXIST) => {
                    return Err(nl(format_args!("create bridge {name:?}"), e));
                }
                _ => {}
            }
            link_by_name(h, name)
                .await
                .map_err(|e| nl(format_args!("look up bridge {name:?}"), e))?
                .ok_or_else(|| {
                    EffectError::Netlink(format!("bridge {name:?} vanished after creation"))
                })?
        }
    };
    if !has_kind(&link, &InfoKind::Bridge) {
        return Err(EffectError::Denied(format!(
            "bridge {name:?} exists and is not a bridge"
        )));
    }
    let index = link.header.index;
    if !link.header.flags.contains(LinkFlags::Up) {
        h.link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl(format_args!("set bridge {name:?} up"), e))?;
    }
    for addr in addresses {
        match h
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
        {
            Err(e) if errno(&e) != Some(Errno::EEXIST) => {
                return Err(nl(format_args!("add address {addr} to bridge {name:?}"), e));
            }
            _ => {}
        }
    }
    Ok(index)
}

/// Creates both ends of the veth in one request; see the module docs.
async fn create_veth(
    h: &Handle,
    target: &Target,
    plan: &Attachment,
    ns: &File,
    bridge: Option<u32>,
) -> Result<(), EffectError> {
    let host_name = plan.veth.host_name.as_str();
    // The peer cannot be set up here: the kernel opens it before it is paired (ENOTCONN).
    let mut peer = LinkUnspec::new_with_name(&target.ifname).setns_by_fd(ns.as_raw_fd());
    if let Some(mtu) = plan.veth.mtu {
        peer = peer.mtu(mtu);
    }
    let mut veth = LinkVeth::new(host_name, &target.ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .up();
    if let Some(mtu) = plan.veth.mtu {
        veth = veth.mtu(mtu);
    }
    if let Some(bridge) = bridge {
        veth = veth.controller(bridge);
    }
    match h.link().add(veth.build()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::EEXIST) => {
            // One of the two names is taken. The host one is cheap to tell from here.
            let host_taken = link_by_name(h, host_name)
                .await
                .map_err(|e| nl(format_args!("look up host veth {host_name:?}"), e))?
                .is_some();
            Err(if host_taken {
                EffectError::HostInterfaceExists(host_name.to_string())
            } else {
                EffectError::ContainerInterfaceExists(target.ifname.clone())
            })
        }
        Err(e) => Err(nl(format_args!("create veth {host_name:?}"), e)),
    }
}

/// Host side after creation: the veth's addresses and routes. Returns its MAC and ifindex.
async fn configure_host(
    h: &Handle,
    host_name: &str,
    plan: &ParsedPlan,
) -> Result<(String, u32), EffectError> {
    let link = link_by_name(h, host_name)
        .await
        .map_err(|e| nl(format_args!("look up host veth {host_name:?}"), e))?
        .ok_or_else(|| {
            EffectError::Netlink(format!("host veth {host_name:?} vanished after creation"))
        })?;
    let index = link.header.index;
    let label = format!("host veth {host_name:?}");
    add_addresses_and_routes(h, index, &label, &plan.host_addresses, &plan.host_routes).await?;
    let mac = mac(&link).ok_or_else(|| {
        EffectError::Netlink(format!("host veth {host_name:?} has no mac address"))
    })?;
    Ok((mac, index))
}

/// Container side: the interface and `lo` up, then addresses, then routes in order. Returns the
/// interface's MAC and ifindex.
async fn configure_container(
    h: &Handle,
    target: &Target,
    plan: &ParsedPlan,
) -> Result<(String, u32), EffectError> {
    let ifname = target.ifname.as_str();
    let link = link_by_name(h, ifname)
        .await
        .map_err(|e| nl(format_args!("look up {ifname:?} in the container netns"), e))?
        .ok_or_else(|| {
            EffectError::Netlink(format!(
                "{ifname:?} did not appear in netns {:?}",
                target.netns
            ))
        })?;
    let index = link.header.index;
    h.link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| nl(format_args!("set {ifname:?} up in the container netns"), e))?;
    h.link()
        .change(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(|e| nl("set lo up in the container netns", e))?;
    let label = format!("{ifname:?} in the container netns");
    add_addresses_and_routes(
        h,
        index,
        &label,
        &plan.container_addresses,
        &plan.container_routes,
    )
    .await?;
    let mac =
        mac(&link).ok_or_else(|| EffectError::Netlink(format!("{ifname:?} has no mac address")))?;
    Ok((mac, index))
}

/// Addresses first, so that routes through a gateway on one of them find it on-link.
async fn add_addresses_and_routes(
    h: &Handle,
    index: u32,
    label: &str,
    addresses: &[IpNet],
    routes: &[RouteSpec],
) -> Result<(), EffectError> {
    for addr in addresses {
        h.address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
            .map_err(|e| nl(format_args!("add address {addr} to {label}"), e))?;
    }
    for route in routes {
        h.route()
            .add(route_message(route, index)?)
            .execute()
            .await
            .map_err(|e| nl(format_args!("add route {} on {label}", describe(route)), e))?;
    }
    Ok(())
}

fn route_message(route: &RouteSpec, oif: u32) -> Result<RouteMessage, EffectError> {
    let invalid = |e| EffectError::Denied(format!("route {}: {e}", describe(route)));
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .map_err(invalid)?
        .output_interface(oif);
    // Like `ip route add`: a route without a gateway is on-link.
    let scope = match (route.scope, route.gw) {
        (Some(scope), _) => RouteScope::from(scope),
        (None, None) => RouteScope::Link,
        (None, Some(_)) => RouteScope::Universe,
    };
    builder = builder.scope(scope);
    if let Some(gw) = route.gw {
        builder = builder.gateway(gw).map_err(invalid)?;
    }
    if let Some(priority) = route.priority {
        builder = builder.priority(priority);
    }
    if let Some(table) = route.table {
        builder = builder.table_id(table);
    }
    let mut message = builder.build();
    let metrics: Vec<RouteMetric> = [
        route.mtu.map(RouteMetric::Mtu),
        route.advmss.map(RouteMetric::Advmss),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !metrics.is_empty() {
        message.attributes.push(RouteAttribute::Metrics(metrics));
    }
    Ok(message)
}

// ---- remove ----

/// The host end of the veth that `built` records (by ifindex, with its MAC and its peer's
/// ifindex), or without a record the veth named in the plan; `None` when it is gone or is not
/// what the host built, which `remove` and `detach` then leave alone.
async fn recorded_veth(
    h: &Handle,
    plan: &Attachment,
    built: Option<&Applied>,
) -> Result<Option<LinkMessage>, EffectError> {
    let host_name = plan.veth.host_name.as_str();
    let found = match built.map(|b| b.host_ifindex).filter(|i| *i != 0) {
        Some(index) => link_by_index(h, index).await,
        None => link_by_name(h, host_name).await,
    };
    let Some(link) = found.map_err(|e| nl(format_args!("look up host veth {host_name:?}"), e))?
    else {
        return Ok(None);
    };
    if !has_kind(&link, &InfoKind::Veth) {
        // Never touch a host interface we did not build, whatever it is.
        tracing::warn!(
            host_veth = host_name,
            "not removing host interface: it is not a veth"
        );
        return Ok(None);
    }
    if let Some(b) = built {
        let peer = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(index) => Some(*index),
            _ => None,
        });
        let same_mac = mac(&link).as_deref() == Some(b.host_mac.as_str());
        let same_peer = b.container_ifindex == 0 || peer == Some(b.container_ifindex);
        if !same_mac || !same_peer {
            tracing::warn!(
                host_veth = host_name,
                ifindex = link.header.index,
                "not removing host veth: it is not the one recorded at ADD"
            );
            return Ok(None);
        }
    }
    Ok(Some(link))
}

/// Deletes the recorded host veth, which deletes its peer in the pod with it.
async fn remove_host_veth(
    h: &Handle,
    plan: &Attachment,
    built: Option<&Applied>,
) -> Result<(), EffectError> {
    let Some(link) = recorded_veth(h, plan, built).await? else {
        return Ok(());
    };
    match h.link().del(link.header.index).execute().await {
        Err(e) if errno(&e) != Some(Errno::ENODEV) => Err(nl(
            format_args!("delete host veth {:?}", plan.veth.host_name),
            e,
        )),
        _ => Ok(()),
    }
}

async fn set_host_veth_down(
    h: &Handle,
    plan: &Attachment,
    built: Option<&Applied>,
) -> Result<(), EffectError> {
    let Some(link) = recorded_veth(h, plan, built).await? else {
        return Ok(());
    };
    match h
        .link()
        .change(LinkUnspec::new_with_index(link.header.index).down().build())
        .execute()
        .await
    {
        Err(e) if errno(&e) != Some(Errno::ENODEV) => Err(nl(
            format_args!("set host veth {:?} down", plan.veth.host_name),
            e,
        )),
        _ => Ok(()),
    }
}

/// Undo of a failed apply. The host veth was created by this very call, so it is ours.
async fn delete_link(h: &Handle, name: &str) -> Result<(), EffectError> {
    match h
        .link()
        .del_with_message(LinkUnspec::new_with_name(name).build())
        .execute()
        .await
    {
        Err(e) if errno(&e) != Some(Errno::ENODEV) => Err(nl(format_args!("delete {name:?}"), e)),
        _ => Ok(()),
    }
}

// ---- verify ----

async fn check_container(
    h: &Handle,
    target: &Target,
    plan: &ParsedPlan,
) -> Result<(), EffectError> {
    let (ifname, netns) = (target.ifname.as_str(), target.netns.as_str());
    let link = link_by_name(h, ifname)
        .await
        .map_err(|e| nl(format_args!("look up {ifname:?} in netns {netns:?}"), e))?
        .ok_or_else(|| {
            EffectError::Missing(format!("interface {ifname:?} not found in netns {netns:?}"))
        })?;
    if !link.header.flags.contains(LinkFlags::Up) {
        return Err(EffectError::Missing(format!(
            "interface {ifname:?} in netns {netns:?} is down"
        )));
    }
    let index = link.header.index;

    if !plan.container_addresses.is_empty() {
        let have: Vec<(IpAddr, u8)> = h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .map_ok(|m| {
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                (local.or(address), m.header.prefix_len)
            })
            .try_filter_map(|(ip, len)| async move { Ok(ip.map(|ip| (ip, len))) })
            .try_collect()
            .await
            .map_err(|e| {
                nl(
                    format_args!("list addresses of {ifname:?} in netns {netns:?}"),
                    e,
                )
            })?;
        for addr in &plan.container_addresses {
            if !have.contains(&(addr.addr(), addr.prefix_len())) {
                return Err(EffectError::Missing(format!(
                    "address {addr} not found on interface {ifname:?} in netns {netns:?}"
                )));
            }
        }
    }

    if !plan.container_routes.is_empty() {
        let mut routes = Vec::new();
        let families = [
            plan.container_routes.iter().any(|r| r.dst.addr().is_ipv4()),
            plan.container_routes.iter().any(|r| r.dst.addr().is_ipv6()),
        ];
        for (i, wanted) in families.into_iter().enumerate() {
            if !wanted {
                continue;
            }
            let filter = if i == 0 {
                RouteMessageBuilder::<Ipv4Addr>::new().build()
            } else {
                RouteMessageBuilder::<Ipv6Addr>::new().build()
            };
            let mut dump = pin!(h.route().get(filter).execute());
            while let Some(route) = dump
                .try_next()
                .await
                .map_err(|e| nl(format_args!("list routes in netns {netns:?}"), e))?
            {
                routes.push(route);
            }
        }
        for route in &plan.container_routes {
            if !routes.iter().any(|m| route_matches(m, route, index)) {
                return Err(EffectError::Missing(format!(
                    "route {} on interface {ifname:?} not found in netns {netns:?}",
                    describe(route)
                )));
            }
        }
    }
    Ok(())
}

async fn check_host(h: &Handle, plan: &Attachment) -> Result<(), EffectError> {
    let host_name = plan.veth.host_name.as_str();
    let link = link_by_name(h, host_name)
        .await
        .map_err(|e| nl(format_args!("look up host veth {host_name:?}"), e))?
        .ok_or_else(|| EffectError::Missing(format!("host veth {host_name:?} not found")))?;
    if let Some(bridge) = &plan.bridge {
        let name = bridge.name.as_str();
        let bridge = link_by_name(h, name)
            .await
            .map_err(|e| nl(format_args!("look up bridge {name:?}"), e))?
            .ok_or_else(|| EffectError::Missing(format!("bridge {name:?} not found")))?;
        let controller = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(index) => Some(*index),
            _ => None,
        });
        if controller != Some(bridge.header.index) {
            return Err(EffectError::Missing(format!(
                "host veth {host_name:?} is not attached to bridge {name:?}"
            )));
        }
    }
    Ok(())
}

fn route_matches(m: &RouteMessage, route: &RouteSpec, oif: u32) -> bool {
    let family = if route.dst.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    let ip = |want: fn(&RouteAttribute) -> Option<&RouteAddress>| {
        m.attributes.iter().find_map(want).and_then(route_ip)
    };
    let dst = ip(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    });
    let gw = ip(|a| match a {
        RouteAttribute::Gateway(g) => Some(g),
        _ => None,
    });
    let out = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    m.header.address_family == family
        && m.header.destination_prefix_length == route.dst.prefix_len()
        && dst.unwrap_or(unspecified(family)) == route.dst.network()
        && out == Some(oif)
        && (route.gw.is_none() || gw == route.gw)
        && table == route.table.unwrap_or(u32::from(RouteHeader::RT_TABLE_MAIN))
}

fn unspecified(family: AddressFamily) -> IpAddr {
    if family == AddressFamily::Inet {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some((*ip).into()),
        RouteAddress::Inet6(ip) => Some((*ip).into()),
        _ => None,
    }
}

// ---- helpers ----

/// The link called `name`, or `None` if there is none.
async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = pin!(h.link().get().match_name(name).execute());
    let mut found = None;
    loop {
        match links.try_next().await {
            Ok(Some(link)) => found = Some(link),
            Ok(None) => return Ok(found),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// The link with ifindex `index`, or `None` if there is none.
async fn link_by_index(h: &Handle, index: u32) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = pin!(h.link().get().match_index(index).execute());
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn has_kind(link: &LinkMessage, kind: &InfoKind) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(k) if k == kind)),
        _ => false,
    })
}

fn mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => Some(
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    })
}

fn describe(route: &RouteSpec) -> String {
    match route.gw {
        Some(gw) => format!("{} via {gw}", route.dst),
        None => route.dst.to_string(),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

/// A netlink failure of `what`, with the kernel's reason.
fn nl(what: impl Display, e: rtnetlink::Error) -> EffectError {
    let reason = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    EffectError::Netlink(format!("{what}: {reason}"))
}
