package podnet

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue is the kernel's struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is the kernel's struct ifreq with ifr_data set: an interface
// name and a pointer, padded to the size of struct ifreq.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [unsafe.Sizeof(unix.Ifreq{}) - unix.IFNAMSIZ - unsafe.Sizeof(uintptr(0))]byte
}

// setTxChecksum turns transmit checksum offload of ifName (in the current
// thread's network namespace) on or off, like `ethtool -K ifName tx on|off`.
// The userspace OVS datapath needs it off on both veth ends: it does not
// complete partial checksums, so offloaded TCP would be dropped.
func setTxChecksum(ifName string, on bool) error {
	v := ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := ethtoolIoctl(ifName, &v); err != nil {
		return fmt.Errorf("setting transmit checksum offload of %s: %w", ifName, err)
	}
	return nil
}

// txChecksum reports whether transmit checksum offload of ifName is on.
func txChecksum(ifName string) (bool, error) {
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if err := ethtoolIoctl(ifName, &v); err != nil {
		return false, fmt.Errorf("reading transmit checksum offload of %s: %w", ifName, err)
	}
	return v.data != 0, nil
}

func ethtoolIoctl(ifName string, v *ethtoolValue) error {
	if len(ifName) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q is too long", ifName)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	req := ifreqData{data: unsafe.Pointer(v)}
	copy(req.name[:], ifName)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return errno
	}
	return nil
}

// DisableTxChecksum turns transmit checksum offload of ifName off (in the
// current thread's network namespace), as every interface the userspace
// datapath exchanges packets with needs (see setTxChecksum).
func DisableTxChecksum(ifName string) error { return setTxChecksum(ifName, false) }
