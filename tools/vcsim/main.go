// vcsim: the VirtRigaud dev-stack vSphere simulator, govmomi's simulator package behind
// a small command line. It prints "VCSIM_URL=<url>" once it is serving, which is what
// the dev stack waits for; with -l 127.0.0.1:0 the URL carries the chosen port.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	_ "github.com/vmware/govmomi/lookup/simulator"
	_ "github.com/vmware/govmomi/pbm/simulator"
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/sts/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	model := simulator.VPX()
	flag.IntVar(&model.Datacenter, "dc", model.Datacenter, "datacenters")
	flag.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters per datacenter")
	flag.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	flag.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts per datacenter")
	flag.IntVar(&model.Datastore, "ds", model.Datastore, "datastores")
	flag.IntVar(&model.Machine, "vm", model.Machine, "VMs per resource pool")
	flag.IntVar(&model.Pool, "pool", model.Pool, "resource pools per compute resource")
	flag.IntVar(&model.Folder, "folder", model.Folder, "folders")
	flag.BoolVar(&model.Autostart, "autostart", model.Autostart, "power on the model's VMs")
	flag.IntVar(&model.DelayConfig.Delay, "delay", 0, "delay added to every method (ms)")
	flag.Float64Var(&model.DelayConfig.DelayJitter, "delay-jitter", 0, "jitter of the delay (coefficient of variation)")
	methodDelay := flag.String("method-delay", "", "per-method delays, e.g. PowerOnVM_Task:200,CloneVM_Task:500 (ms)")
	listen := flag.String("l", "127.0.0.1:8989", "listen address (port 0 picks a free port)")
	user := flag.String("username", "", "login username (any when empty)")
	pass := flag.String("password", "", "login password (any when empty)")
	useTLS := flag.Bool("tls", true, "serve HTTPS")
	flag.Parse()

	if *methodDelay != "" {
		model.DelayConfig.MethodDelay = map[string]int{}
		for _, kv := range strings.Split(*methodDelay, ",") {
			name, ms, ok := strings.Cut(kv, ":")
			n, err := strconv.Atoi(ms)
			if !ok || err != nil {
				log.Fatalf("-method-delay: %q is not Method:milliseconds", kv)
			}
			model.DelayConfig.MethodDelay[name] = n
		}
	}
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	u := &url.URL{Host: *listen}
	if *user != "" {
		u.User = url.UserPassword(*user, *pass)
	}
	model.Service.RegisterEndpoints = true
	model.Service.Listen = u
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	s := model.Service.NewServer()
	served := *s.URL
	served.User = nil
	fmt.Printf("VCSIM_URL=%s PID=%d\n", served.String(), os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Close()
	model.Remove()
}
