// Package memnet is an in-memory network for tests that run in a testing/synctest bubble, where real sockets
// cannot be used (a goroutine blocked on a socket is not durably blocked, so the bubble's clock would never move):
// listeners by address, dials that join a net.Pipe to them, and a way to cut the connections a dialer made, as a
// network that drops a peer would.
//
// It does not emulate TCP's buffering (a net.Pipe write waits for the reader), name resolution (an address is a
// listener's name, nothing else), or half-closes.
package memnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Network is a set of listeners and the connections dialed to them. Its zero value is not usable: New.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*Listener
	byTag     map[string]map[net.Conn]struct{} // both ends of every open connection, by the dialer's tag
	next      uint32                           // the last remote address given out
}

// New returns an empty network.
func New() *Network {
	return &Network{listeners: map[string]*Listener{}, byTag: map[string]map[net.Conn]struct{}{}}
}

// Listen opens a listener at addr ("gateway.test:80"); the address is what dials name and what Addr returns.
func (n *Network) Listen(addr string) (*Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("memnet: listen %s: address already in use", addr)
	}
	l := &Listener{net: n, addr: nameAddr(addr), accept: make(chan net.Conn), closed: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// DialContext dials addr with the tag "".
func (n *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.Dialer("")(ctx, network, addr)
}

// Dialer returns a dial function whose connections Cut(tag) closes: give each peer its own tag.
func (n *Network) Dialer(tag string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.mu.Lock()
		l := n.listeners[addr]
		n.next++
		remote := net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(n.next%250 + 1)}), uint16(40000+n.next%20000)))
		n.mu.Unlock()
		if l == nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("connection refused (no memnet listener at %s)", addr)}
		}
		client, server := net.Pipe()
		c := &conn{Conn: client, local: remote, remote: l.addr, net: n, tag: tag}
		s := &conn{Conn: server, local: l.addr, remote: remote, net: n, tag: tag, peer: c}
		c.peer = s
		n.track(c, s)
		select {
		case l.accept <- s:
			return c, nil
		case <-l.closed:
		case <-ctx.Done():
		}
		c.Close()
		if ctx.Err() != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (listener closed)")}
	}
}

// Cut closes both ends of every open connection dialed with tag, under their owners: each side's reads and writes
// fail (io.ErrClosedPipe) with no goodbye from the other, as when a network resets a connection.
func (n *Network) Cut(tag string) {
	n.mu.Lock()
	conns := n.byTag[tag]
	n.byTag[tag] = nil
	n.mu.Unlock()
	for c := range conns {
		c.(*conn).Conn.Close()
	}
}

// Open is the number of connections dialed with tag that are still open.
func (n *Network) Open(tag string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byTag[tag]) / 2
}

func (n *Network) track(ends ...net.Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byTag[ends[0].(*conn).tag] == nil {
		n.byTag[ends[0].(*conn).tag] = map[net.Conn]struct{}{}
	}
	for _, c := range ends {
		n.byTag[c.(*conn).tag][c] = struct{}{}
	}
}

func (n *Network) forget(c *conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.byTag[c.tag], c)
	delete(n.byTag[c.tag], c.peer)
}

// conn is one end of a pipe, with the addresses of a TCP connection.
type conn struct {
	net.Conn
	local, remote net.Addr
	net           *Network
	tag           string
	peer          *conn
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) Close() error {
	c.net.forget(c)
	return c.Conn.Close()
}

// Listener accepts the connections dialed to its address.
type Listener struct {
	net    *Network
	addr   nameAddr
	accept chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections already made stay open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.net.mu.Lock()
		delete(l.net.listeners, string(l.addr))
		l.net.mu.Unlock()
	})
	return nil
}

func (l *Listener) Addr() net.Addr { return l.addr }

// nameAddr is a listener's address: the name dials use.
type nameAddr string

func (a nameAddr) Network() string { return "tcp" }
func (a nameAddr) String() string  { return string(a) }
