package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nofile returns RLIMIT_NOFILE.
func nofile() (soft, hard uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, err
	}
	return rl.Cur, rl.Max, nil
}

// raiseNoFile raises RLIMIT_NOFILE so that want descriptors fit: the soft limit to the hard one, and
// — when that is not enough and the process may (root, CAP_SYS_RESOURCE) — both up to fs.nr_open.
// It returns the soft limit in force afterwards.
func raiseNoFile(want uint64) uint64 {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	if rl.Max < want {
		nrOpen := uint64(1 << 20)
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				nrOpen = n
			}
		}
		up := unix.Rlimit{Cur: nrOpen, Max: nrOpen}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &up) == nil {
			return nrOpen
		}
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
		unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

// selfCPU is the CPU time (user + system) this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux architecture Go runs on.
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time (user + system) of process pid, from /proc/<pid>/stat (10 ms resolution).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: fields count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// procRSS is VmRSS of process pid (0 for this process) in bytes.
func procRSS(pid int) int64 {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	return procKB(path, "VmRSS:") * 1024
}

// sourceDialer dials TCP from a rotating set of loopback source addresses (127.0.0.2, 127.0.0.3, …),
// each bound with IP_BIND_ADDRESS_NO_PORT so that the kernel picks the port at connect() and every
// source address has the whole ephemeral port range (28,232 by default) for each destination: N
// connections to one server need ⌈N / 28k⌉ source addresses. All of 127.0.0.0/8 routes to lo.
type sourceDialer struct {
	ips  []net.IP
	next atomic.Uint64
}

func newSourceDialer(n int) *sourceDialer {
	d := &sourceDialer{}
	// 127.0.0.2 … 127.0.0.254, 127.0.1.1 …: host parts 0 and 255 are skipped.
	for k := 2; len(d.ips) < n; k++ {
		if y := k % 256; y == 0 || y == 255 {
			continue
		}
		d.ips = append(d.ips, net.IPv4(127, 0, byte(k/256), byte(k%256)))
	}
	return d
}

func (d *sourceDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ip := d.ips[int(d.next.Add(1)-1)%len(d.ips)]
	nd := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: ip},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return nd.DialContext(ctx, network, addr)
}
