package netlab

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// NginxPort is where the box's nginx listens; TLSOnly443 redirects the client's 443 traffic to it.
const NginxPort = 8443

// TLSOnly443 starts nginx in the box as a middlebox that lets only TLS through on 443: every
// connection from the client to any address's port 443 is redirected to nginx (nftables), which
// reads the first bytes (stream ssl_preread) and passes a TLS ClientHello on to upstream (host:port);
// anything else is cut off. It is how proxies that "terminate non-SSL connections" behave (the
// reference text, N8).
func (l *Lab) TLSOnly443(upstream string) *Proc {
	l.t.Helper()
	return l.startNginx443(fmt.Sprintf(`
	map $ssl_preread_protocol $upstream {
		""      127.0.0.1:9;   # not TLS: nothing listens there, so nginx closes the connection
		default %s;
	}
	server {
		listen %d;
		ssl_preread on;
		preread_timeout 5s;
		proxy_connect_timeout 3s;
		proxy_pass $upstream;
	}
`, upstream, NginxPort))
}

// SquidPort is where the box's squid listens, on BoxInAddr.
const SquidPort = 3128

// Squid starts squid in the box as an HTTP proxy for the client that allows CONNECT only to port 443,
// and makes it the client's only way out: the box no longer forwards the client's own TCP. The proxy
// URL is http://198.18.0.1:3128.
func (l *Lab) Squid() *Proc {
	l.t.Helper()
	Require(l.t, "squid")
	// Squid drops to its own user: its folder must be reachable and writable by it, which a
	// t.TempDir (inside a 0700 folder) is not.
	dir, err := os.MkdirTemp("", "netlab-squid")
	if err != nil {
		l.t.Fatalf("%v", err)
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		l.t.Fatalf("%v", err)
	}
	conf := fmt.Sprintf(`http_port %[2]s:%[3]d
acl SSL_ports port 443
acl CONNECT method CONNECT
http_access deny CONNECT !SSL_ports
http_access allow all
cache deny all
cache_mem 8 MB
access_log stdio:%[1]s/access.log
cache_log %[1]s/cache.log
pid_filename %[1]s/squid.pid
coredump_dir %[1]s
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
`, dir, BoxInAddr, SquidPort)
	path := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		l.t.Fatalf("%v", err)
	}
	p := l.Box.Start("squid", "-N", "-f", path)
	l.Client.WaitListening(p, fmt.Sprintf("%s:%d", BoxInAddr, SquidPort), 20*time.Second)
	l.SetRules(fmt.Sprintf("iifname %q drop", BoxClientDev))
	return p
}

// SquidURL is the proxy URL of Squid.
func SquidURL() string { return fmt.Sprintf("http://%s:%d", BoxInAddr, SquidPort) }

// InterceptTLS443 starts nginx in the box as a TLS-inspecting middlebox: every connection from the
// client to port 443 is redirected to nginx, which terminates TLS with certFile/keyFile (a certificate
// of its own CA, as corporate inspection proxies do) and opens its own TLS connection to upstream.
func (l *Lab) InterceptTLS443(certFile, keyFile, upstream string) *Proc {
	l.t.Helper()
	return l.startNginx443(fmt.Sprintf(`
	server {
		listen %d ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		proxy_ssl on;
		proxy_connect_timeout 3s;
		proxy_pass %s;
	}
`, NginxPort, certFile, keyFile, upstream))
}

// startNginx443 runs nginx in the box, in the foreground with its files in a temporary folder, with
// stream (the inside of its stream block), and redirects the client's port 443 to it.
func (l *Lab) startNginx443(stream string) *Proc {
	l.t.Helper()
	Require(l.t, "nginx")
	dir := l.t.TempDir()
	conf := fmt.Sprintf(`load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 1024; }
stream {%[2]s}
`, dir, stream)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		l.t.Fatalf("%v", err)
	}
	p := l.Box.Start("nginx", "-c", path, "-e", filepath.Join(dir, "error.log"))
	l.Box.WaitListening(p, fmt.Sprintf("127.0.0.1:%d", NginxPort), 10*time.Second)
	if err := l.Box.NFT(fmt.Sprintf(`table ip labnat
delete table ip labnat
table ip labnat {
	chain prerouting {
		type nat hook prerouting priority dstnat;
		iifname %q tcp dport 443 redirect to :%d
	}
}
`, BoxClientDev, NginxPort)); err != nil {
		l.t.Fatalf("%v", err)
	}
	return p
}
