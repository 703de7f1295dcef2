package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// loopbackTable is the nftables table (family inet) that sends TCP
// connections to the namespace's loopback to the shim's listener; Teardown
// deletes it by name.
const loopbackTable = "coco-portforward"

// installLoopbackRedirect makes, in the namespace open as nsFd, every TCP
// connection to 127.0.0.1 go to port4 and every one to ::1 to port6 (0:
// none), whatever port it was for. The port asked for stays readable with
// SO_ORIGINAL_DST. Connections to the listener's own port are redirected
// to themselves, so no port is lost to the listener. It replaces a table
// of the same name (a shim restarted on the same namespace).
func installLoopbackRedirect(nsFd int, port4, port6 uint16) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: loopbackTable}
	// Add then delete then add: one batch that works whether or not the
	// table exists.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	// Locally made connections only (containerd's CRI dials from inside
	// the namespace); nat at dstnat priority, before routing picks lo.
	ch := c.AddChain(&nftables.Chain{
		Name:     "output",
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityNATDest,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: redirectExprs(unix.NFPROTO_IPV4, net.IPv4(127, 0, 0, 1).To4(), 16, port4)})
	if port6 != 0 {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: redirectExprs(unix.NFPROTO_IPV6, net.IPv6loopback, 24, port6)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table inet %s (needs nf_tables NAT in the kernel): %w", loopbackTable, err)
	}
	return nil
}

// redirectExprs: meta nfproto <family> meta l4proto tcp <ip|ip6> daddr
// <loopback> redirect to :<port>. daddrOffset is the destination address's
// offset in the network header (16 for IPv4, 24 for IPv6).
func redirectExprs(family byte, loopback net.IP, daddrOffset uint32, port uint16) []expr.Any {
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, port)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOffset, Len: uint32(len(loopback))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: loopback},
		&expr.Immediate{Register: 1, Data: p},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

// removeLoopbackRedirect deletes the table from the namespace at nsPath. A
// namespace or table that is gone is not an error.
func removeLoopbackRedirect(nsPath string) error {
	f, err := os.Open(nsPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		if gone(err) {
			return nil
		}
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		if gone(err) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT) {
			return nil // no namespace any more, or no nf_tables: nothing of ours
		}
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name != loopbackTable {
			continue
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete nftables table inet %s: %w", loopbackTable, err)
		}
	}
	return nil
}
