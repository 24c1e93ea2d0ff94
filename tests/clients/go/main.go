// Command go-client drives wasmgate's sockets the way kubelet and crictl (grpc-go) do, so the
// tests can prove that a non-Rust gRPC stack gets through: one subcommand per socket (cri, csi,
// registration), one line per call on stdout (`ok <service> <method> [<expected code>]` or
// `FAIL <service> <method>: <why>`), and exit status 1 if any call failed.
//
// Dial forms (-dial):
//
//	path      the target is the bare socket path and a context dialer connects to it, with
//	          insecure credentials and no authority override: exactly how kubelet 1.26–1.29 and
//	          crictl dial a CRI or CSI socket and kubelet's plugin watcher a registration socket.
//	          grpc-go then sends the socket path as the HTTP/2 :authority.
//	unix-uri  the target is unix://<path> and grpc-go's own dialer connects (its :authority is
//	          then "localhost").
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cri "wasmgate.test/gen/cri"
	csi "wasmgate.test/gen/csi"
	reg "wasmgate.test/gen/registration"
)

// callTimeout bounds every call: a RunPodSandbox on a real containerd takes a few seconds.
const callTimeout = 60 * time.Second

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go-client cri|csi|registration -socket PATH [-dial path|unix-uri] [flags]")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	socket := fs.String("socket", "", "the unix socket to call")
	dialForm := fs.String("dial", "path", "path (bare path + context dialer, as kubelet) or unix-uri (unix://path)")
	var run func(*grpc.ClientConn, *report)
	switch os.Args[1] {
	case "cri":
		run = criFlags(fs)
	case "csi":
		run = csiFlags(fs)
	case "registration":
		run = registrationFlags(fs)
	default:
		usage()
	}
	fs.Parse(os.Args[2:])
	if *socket == "" {
		usage()
	}
	conn, err := dial(*socket, *dialForm)
	if err != nil {
		fmt.Printf("FAIL %s dial: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	defer conn.Close()
	r := &report{service: os.Args[1]}
	run(conn, r)
	if r.failed {
		os.Exit(1)
	}
}

func dial(socket, form string) (*grpc.ClientConn, error) {
	switch form {
	case "path":
		// kubelet's util.GetAddressAndDialer: the address handed to grpc is the path itself.
		dialer := func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}
		return grpc.Dial(socket, grpc.WithInsecure(), grpc.WithContextDialer(dialer))
	case "unix-uri":
		abs, err := filepath.Abs(socket)
		if err != nil {
			return nil, err
		}
		return grpc.Dial("unix://"+abs, grpc.WithInsecure())
	default:
		return nil, fmt.Errorf("unknown dial form %q", form)
	}
}

// report prints one line per call and remembers whether any failed.
type report struct {
	service string
	failed  bool
}

func (r *report) ok(method string, extra ...string) {
	fmt.Println(strings.Join(append([]string{"ok", r.service, method}, extra...), " "))
}

func (r *report) fail(method string, format string, args ...interface{}) {
	r.failed = true
	fmt.Printf("FAIL %s %s: %s\n", r.service, method, fmt.Sprintf(format, args...))
}

// check reports the outcome of a call that must succeed and pass `verify`; false if it did not.
func (r *report) check(method string, err error, verify func() error) bool {
	if err != nil {
		r.fail(method, "%s", describe(err))
		return false
	}
	if verify != nil {
		if e := verify(); e != nil {
			r.fail(method, "%v", e)
			return false
		}
	}
	r.ok(method)
	return true
}

// expect reports the outcome of a call that must fail with exactly `want`.
func (r *report) expect(method string, want codes.Code, err error) bool {
	if err == nil {
		r.fail(method, "succeeded, want %s", want)
		return false
	}
	if got := status.Code(err); got != want {
		r.fail(method, "got %s, want %s", describe(err), want)
		return false
	}
	r.ok(method, want.String())
	return true
}

func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("code=%s message=%q", s.Code(), s.Message())
	}
	return err.Error()
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// ---- CRI --------------------------------------------------------------------------------------

type criOpts struct {
	pod, namespace, image, pull, runtime string
	cgroupParent, logDir                 string
	env, annotation                      string
	streamContainers, containerEvents    string
}

func criFlags(fs *flag.FlagSet) func(*grpc.ClientConn, *report) {
	o := &criOpts{}
	fs.StringVar(&o.pod, "pod", "foreign", "the pod's name (its uid is derived from it)")
	fs.StringVar(&o.namespace, "namespace", "default", "the pod's namespace")
	fs.StringVar(&o.image, "image", "busybox", "the container's image")
	fs.StringVar(&o.pull, "pull", "always", "always, or if-not-present (ImageStatus first, as kubelet's IfNotPresent)")
	fs.StringVar(&o.runtime, "runtime", "", "the runtime_name Version must report")
	fs.StringVar(&o.cgroupParent, "cgroup-parent", "", "the pod's cgroup parent")
	fs.StringVar(&o.logDir, "log-dir", "", "the pod's log directory")
	fs.StringVar(&o.env, "env", "", "KEY=VALUE the container must have (a hook injects it)")
	fs.StringVar(&o.annotation, "annotation", "", "KEY=VALUE the container's status must carry")
	fs.StringVar(&o.streamContainers, "stream-containers", "OK", "how StreamContainers must end: OK, or a code such as Unimplemented")
	fs.StringVar(&o.containerEvents, "container-events", "OK", "how GetContainerEvents must answer: OK (the container's events come), or a code")
	return func(conn *grpc.ClientConn, r *report) { runCRI(conn, r, o) }
}

func parseCode(name string) (codes.Code, error) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown code %q", name)
}

func runCRI(conn *grpc.ClientConn, r *report, o *criOpts) {
	rt := cri.NewRuntimeServiceClient(conn)
	im := cri.NewImageServiceClient(conn)
	containersCode, err := parseCode(o.streamContainers)
	if err != nil {
		r.fail("flags", "%v", err)
		return
	}
	eventsCode, err := parseCode(o.containerEvents)
	if err != nil {
		r.fail("flags", "%v", err)
		return
	}

	c, cancel := ctx()
	defer cancel()
	v, err := rt.Version(c, &cri.VersionRequest{})
	if !r.check("Version", err, func() error {
		if o.runtime != "" && v.RuntimeName != o.runtime {
			return fmt.Errorf("runtime_name %q, want %q", v.RuntimeName, o.runtime)
		}
		return nil
	}) {
		return
	}

	st, err := rt.Status(c, &cri.StatusRequest{})
	if !r.check("Status", err, func() error {
		ready := map[string]bool{}
		for _, cond := range st.GetStatus().GetConditions() {
			ready[cond.Type] = cond.Status
		}
		if !ready["RuntimeReady"] || !ready["NetworkReady"] {
			return fmt.Errorf("not ready: %v", st.GetStatus().GetConditions())
		}
		return nil
	}) {
		return
	}

	spec := &cri.ImageSpec{Image: o.image}
	present := false
	if o.pull == "if-not-present" {
		is, err := im.ImageStatus(c, &cri.ImageStatusRequest{Image: spec})
		if !r.check("ImageStatus", err, nil) {
			return
		}
		present = is.GetImage() != nil
	}
	if !present {
		p, err := im.PullImage(c, &cri.PullImageRequest{Image: spec})
		if !r.check("PullImage", err, func() error {
			if p.ImageRef == "" {
				return fmt.Errorf("no image_ref")
			}
			return nil
		}) {
			return
		}
	}

	podConfig := &cri.PodSandboxConfig{
		Metadata: &cri.PodSandboxMetadata{
			Name:      o.pod,
			Uid:       fmt.Sprintf("uid-%s-%d", o.pod, os.Getpid()),
			Namespace: o.namespace,
		},
		Hostname:     o.pod,
		LogDirectory: o.logDir,
		Labels:       map[string]string{"app": o.pod},
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent: o.cgroupParent,
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{},
			},
		},
	}
	run, err := rt.RunPodSandbox(c, &cri.RunPodSandboxRequest{Config: podConfig})
	if !r.check("RunPodSandbox", err, nil) {
		return
	}
	pod := run.PodSandboxId
	// kubelet's teardown, also when a step below failed; reported only on the normal path.
	podRemoved := false
	defer func() {
		if !podRemoved {
			c, cancel := ctx()
			defer cancel()
			rt.StopPodSandbox(c, &cri.StopPodSandboxRequest{PodSandboxId: pod})
			rt.RemovePodSandbox(c, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
		}
	}()

	// Subscribed before the container exists, so its created and started events must arrive.
	events, eventErrs := watchEvents(rt)

	cc, err := rt.CreateContainer(c, &cri.CreateContainerRequest{
		PodSandboxId: pod,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "app"},
			Image:    spec,
			Command:  []string{"sleep", "1000000"},
			LogPath:  "app/0.log",
			Linux: &cri.LinuxContainerConfig{
				SecurityContext: &cri.LinuxContainerSecurityContext{
					NamespaceOptions: &cri.NamespaceOption{},
				},
			},
		},
		SandboxConfig: podConfig,
	})
	if !r.check("CreateContainer", err, nil) {
		return
	}
	ctr := cc.ContainerId

	_, err = rt.StartContainer(c, &cri.StartContainerRequest{ContainerId: ctr})
	if !r.check("StartContainer", err, nil) {
		return
	}

	cs, err := rt.ContainerStatus(c, &cri.ContainerStatusRequest{ContainerId: ctr})
	if !r.check("ContainerStatus", err, func() error {
		s := cs.GetStatus()
		if s.GetId() != ctr || s.GetState() != cri.ContainerState_CONTAINER_RUNNING {
			return fmt.Errorf("id %q state %s, want %q running", s.GetId(), s.GetState(), ctr)
		}
		if k, want, ok := strings.Cut(o.annotation, "="); ok && s.GetAnnotations()[k] != want {
			return fmt.Errorf("annotation %s=%q, want %q", k, s.GetAnnotations()[k], want)
		}
		return nil
	}) {
		return
	}

	ex, err := rt.ExecSync(c, &cri.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"env"}, Timeout: 10})
	if !r.check("ExecSync", err, func() error {
		if ex.ExitCode != 0 {
			return fmt.Errorf("env exited %d: %s", ex.ExitCode, ex.Stderr)
		}
		if o.env != "" && !hasLine(string(ex.Stdout), o.env) {
			return fmt.Errorf("no %s in the container's env: %q", o.env, ex.Stdout)
		}
		return nil
	}) {
		return
	}

	filter := &cri.ContainerFilter{PodSandboxId: pod}
	lc, err := rt.ListContainers(c, &cri.ListContainersRequest{Filter: filter})
	if !r.check("ListContainers", err, func() error {
		return onlyRunning(lc.Containers, ctr)
	}) {
		return
	}

	// A finite server stream: the same list, in batches.
	var streamed []*cri.Container
	err = drain(func() (func() error, error) {
		s, err := rt.StreamContainers(c, &cri.StreamContainersRequest{Filter: filter})
		if err != nil {
			return nil, err
		}
		return func() error {
			resp, err := s.Recv()
			if err == nil {
				streamed = append(streamed, resp.Containers...)
			}
			return err
		}, nil
	})
	if !streamResult(r, "StreamContainers", containersCode, err, func() error {
		return onlyRunning(streamed, ctr)
	}) {
		return
	}

	// An endless server stream: the events of our container, read until both came.
	if !streamResult(r, "GetContainerEvents", eventsCode, awaitEvents(events, eventErrs, ctr), nil) {
		return
	}

	_, err = rt.ContainerStatus(c, &cri.ContainerStatusRequest{ContainerId: strings.Repeat("f00d", 16)})
	if !r.expect("ContainerStatus", codes.NotFound, err) {
		return
	}

	_, err = rt.StopContainer(c, &cri.StopContainerRequest{ContainerId: ctr, Timeout: 0})
	if !r.check("StopContainer", err, nil) {
		return
	}
	_, err = rt.RemoveContainer(c, &cri.RemoveContainerRequest{ContainerId: ctr})
	if !r.check("RemoveContainer", err, nil) {
		return
	}
	_, err = rt.StopPodSandbox(c, &cri.StopPodSandboxRequest{PodSandboxId: pod})
	if !r.check("StopPodSandbox", err, nil) {
		return
	}
	_, err = rt.RemovePodSandbox(c, &cri.RemovePodSandboxRequest{PodSandboxId: pod})
	podRemoved = err == nil
	r.check("RemovePodSandbox", err, nil)
}

func hasLine(text, line string) bool {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if sc.Text() == line {
			return true
		}
	}
	return false
}

func onlyRunning(list []*cri.Container, id string) error {
	if len(list) != 1 || list[0].Id != id || list[0].State != cri.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("want only %s, running; got %v", id, list)
	}
	return nil
}

// drain opens a stream and receives until it ends: nil at a clean EOF, else the error.
func drain(open func() (func() error, error)) error {
	recv, err := open()
	if err != nil {
		return err
	}
	for {
		if err := recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// streamResult reports a server stream that must end as `want` says: cleanly and passing
// `verify`, or with exactly that code.
func streamResult(r *report, method string, want codes.Code, err error, verify func() error) bool {
	if want == codes.OK {
		return r.check(method, err, verify)
	}
	return r.expect(method, want, err)
}

// watchEvents subscribes to GetContainerEvents and forwards what arrives until the stream fails
// (an endless stream never ends by itself; the call's deadline cancels it at the latest).
func watchEvents(rt cri.RuntimeServiceClient) (<-chan *cri.ContainerEventResponse, <-chan error) {
	events := make(chan *cri.ContainerEventResponse, 1024)
	errc := make(chan error, 1)
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	s, err := rt.GetContainerEvents(c, &cri.GetEventsRequest{})
	if err == nil {
		// The runtime answers with headers once it has subscribed: events from then on are ours.
		_, err = s.Header()
	}
	if err != nil {
		cancel()
		errc <- err
		return events, errc
	}
	go func() {
		defer cancel()
		for {
			ev, err := s.Recv()
			if err == io.EOF {
				err = fmt.Errorf("the event stream ended")
			}
			if err != nil {
				errc <- err
				return
			}
			events <- ev
		}
	}()
	return events, errc
}

// awaitEvents collects events until container `id` has a created and a started event.
func awaitEvents(events <-chan *cri.ContainerEventResponse, errc <-chan error, id string) error {
	var seen []*cri.ContainerEventResponse
	deadline := time.After(callTimeout)
	for wantEvents(seen, id) != nil {
		select {
		case ev := <-events:
			seen = append(seen, ev)
		case err := <-errc:
			return err
		case <-deadline:
			return wantEvents(seen, id)
		}
	}
	return nil
}

// wantEvents checks that a created and then a started event of container `id` are in `seen`.
func wantEvents(seen []*cri.ContainerEventResponse, id string) error {
	created := false
	for _, ev := range seen {
		if ev.ContainerId != id {
			continue
		}
		switch ev.ContainerEventType {
		case cri.ContainerEventType_CONTAINER_CREATED_EVENT:
			created = true
		case cri.ContainerEventType_CONTAINER_STARTED_EVENT:
			if created {
				return nil
			}
		}
	}
	return fmt.Errorf("no created and started events of container %q in %d events", id, len(seen))
}

// ---- CSI --------------------------------------------------------------------------------------

type csiOpts struct {
	driver, node, kubeletDir, name string
}

func csiFlags(fs *flag.FlagSet) func(*grpc.ClientConn, *report) {
	o := &csiOpts{}
	fs.StringVar(&o.driver, "driver", "", "the driver name GetPluginInfo must report")
	fs.StringVar(&o.node, "node", "", "the node ID NodeGetInfo must report")
	fs.StringVar(&o.kubeletDir, "kubelet-dir", "", "the daemon's [csi] kubelet_dir, under which to lay out the staging and target paths as kubelet does")
	fs.StringVar(&o.name, "name", "pvc-foreign", "the volume's name")
	return func(conn *grpc.ClientConn, r *report) { runCSI(conn, r, o) }
}

func singleWriter() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// isMountPoint reads this process's mountinfo: the client shares the daemon's mount namespace.
func isMountPoint(path string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	want := strings.ReplaceAll(path, " ", "\\040")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == want {
			return true
		}
	}
	return false
}

func runCSI(conn *grpc.ClientConn, r *report, o *csiOpts) {
	id := csi.NewIdentityClient(conn)
	ctl := csi.NewControllerClient(conn)
	node := csi.NewNodeClient(conn)
	c, cancel := ctx()
	defer cancel()

	pi, err := id.GetPluginInfo(c, &csi.GetPluginInfoRequest{})
	if !r.check("GetPluginInfo", err, func() error {
		if o.driver != "" && pi.Name != o.driver {
			return fmt.Errorf("name %q, want %q", pi.Name, o.driver)
		}
		return nil
	}) {
		return
	}
	ni, err := node.NodeGetInfo(c, &csi.NodeGetInfoRequest{})
	if !r.check("NodeGetInfo", err, func() error {
		if o.node != "" && ni.NodeId != o.node {
			return fmt.Errorf("node_id %q, want %q", ni.NodeId, o.node)
		}
		return nil
	}) {
		return
	}

	// kubelet creates the staging directory and the target's parent; the driver the rest.
	pod := fmt.Sprintf("%s-%d", o.name, os.Getpid())
	staging := filepath.Join(o.kubeletDir, "plugins/kubernetes.io/csi", o.driver, pod, "globalmount")
	target := filepath.Join(o.kubeletDir, "pods", pod, "volumes/kubernetes.io~csi", o.name, "mount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		r.fail("setup", "%v", err)
		return
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		r.fail("setup", "%v", err)
		return
	}

	const size = 16 << 20
	cv, err := ctl.CreateVolume(c, &csi.CreateVolumeRequest{
		Name:               o.name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{singleWriter()},
	})
	if !r.check("CreateVolume", err, func() error {
		if cv.GetVolume().GetVolumeId() == "" || cv.GetVolume().GetCapacityBytes() < size {
			return fmt.Errorf("volume %v", cv.GetVolume())
		}
		return nil
	}) {
		return
	}
	vol := cv.Volume.VolumeId

	_, err = node.NodeStageVolume(c, &csi.NodeStageVolumeRequest{
		VolumeId:          vol,
		StagingTargetPath: staging,
		VolumeCapability:  singleWriter(),
	})
	if !r.check("NodeStageVolume", err, func() error {
		if !isMountPoint(staging) {
			return fmt.Errorf("%s is not a mount point", staging)
		}
		return nil
	}) {
		return
	}

	publish := &csi.NodePublishVolumeRequest{
		VolumeId:          vol,
		StagingTargetPath: staging,
		TargetPath:        target,
		VolumeCapability:  singleWriter(),
	}
	_, err = node.NodePublishVolume(c, publish)
	if !r.check("NodePublishVolume", err, func() error {
		if !isMountPoint(target) {
			return fmt.Errorf("%s is not a mount point", target)
		}
		// What the pod writes lands in the staged volume.
		payload := "written through " + target
		if err := os.WriteFile(filepath.Join(target, "hello.txt"), []byte(payload), 0o644); err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(staging, "hello.txt"))
		if err != nil || string(got) != payload {
			return fmt.Errorf("staging has %q (%v), want %q", got, err, payload)
		}
		return nil
	}) {
		return
	}

	_, err = node.NodePublishVolume(c, &csi.NodePublishVolumeRequest{
		StagingTargetPath: staging,
		TargetPath:        target + "-2",
		VolumeCapability:  singleWriter(),
	})
	if !r.expect("NodePublishVolume", codes.InvalidArgument, err) {
		return
	}

	_, err = node.NodeUnpublishVolume(c, &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: target})
	if !r.check("NodeUnpublishVolume", err, func() error {
		if isMountPoint(target) {
			return fmt.Errorf("%s is still a mount point", target)
		}
		return nil
	}) {
		return
	}
	_, err = node.NodeUnstageVolume(c, &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: staging})
	if !r.check("NodeUnstageVolume", err, func() error {
		if isMountPoint(staging) {
			return fmt.Errorf("%s is still a mount point", staging)
		}
		return nil
	}) {
		return
	}
	_, err = ctl.DeleteVolume(c, &csi.DeleteVolumeRequest{VolumeId: vol})
	r.check("DeleteVolume", err, nil)
}

// ---- plugin registration ----------------------------------------------------------------------

type registrationOpts struct {
	driver, endpoint string
}

func registrationFlags(fs *flag.FlagSet) func(*grpc.ClientConn, *report) {
	o := &registrationOpts{}
	fs.StringVar(&o.driver, "driver", "", "the plugin name GetInfo must report")
	fs.StringVar(&o.endpoint, "endpoint", "", "the CSI endpoint GetInfo must report")
	return func(conn *grpc.ClientConn, r *report) { runRegistration(conn, r, o) }
}

func runRegistration(conn *grpc.ClientConn, r *report, o *registrationOpts) {
	client := reg.NewRegistrationClient(conn)
	c, cancel := ctx()
	defer cancel()

	info, err := client.GetInfo(c, &reg.InfoRequest{})
	if !r.check("GetInfo", err, func() error {
		if info.Type != "CSIPlugin" {
			return fmt.Errorf("type %q, want CSIPlugin", info.Type)
		}
		if o.driver != "" && info.Name != o.driver {
			return fmt.Errorf("name %q, want %q", info.Name, o.driver)
		}
		if o.endpoint != "" && info.Endpoint != o.endpoint {
			return fmt.Errorf("endpoint %q, want %q", info.Endpoint, o.endpoint)
		}
		for _, v := range info.SupportedVersions {
			for _, n := range strings.Split(v, ".") {
				if _, err := strconv.Atoi(n); err != nil {
					return fmt.Errorf("not a version: %q", v)
				}
			}
		}
		if len(info.SupportedVersions) == 0 {
			return fmt.Errorf("no supported versions")
		}
		return nil
	}) {
		return
	}

	_, err = client.NotifyRegistrationStatus(c, &reg.RegistrationStatus{PluginRegistered: true})
	if !r.check("NotifyRegistrationStatus", err, nil) {
		return
	}

	// A CSI call sent to the registration socket by mistake: that service is not served here.
	_, err = csi.NewIdentityClient(conn).GetPluginInfo(c, &csi.GetPluginInfoRequest{})
	r.expect("GetPluginInfo", codes.Unimplemented, err)
}
