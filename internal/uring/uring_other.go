//go:build !linux

package uring

import (
	"errors"
	"math"
	"unsafe"
)

const (
	OpSendmsg = 9
	OpSend    = 26
	OpRecv    = 27
)

const Unknown = math.MinInt32

type Op struct {
	Opcode   uint8
	Fd       int32
	Addr     unsafe.Pointer
	Len      uint32
	MsgFlags uint32
}

// Ring is never made outside Linux: New fails, and callers make one system
// call per operation.
type Ring struct{}

func New(entries int) (*Ring, error) { return nil, errors.New("io_uring is Linux only") }

func (r *Ring) Cap() int                        { return 0 }
func (r *Ring) Run(ops []Op, res []int32) error { return errors.New("io_uring is Linux only") }
func (r *Ring) Close()                          {}
