//go:build !linux

package uring

import (
	"errors"
	"fmt"
)

// Outside Linux New fails with ErrUnavailable, and callers make one system
// call per operation.

type Op struct{}

func Send(fd int, b []byte) Op { return Op{} }
func Recv(fd int, b []byte) Op { return Op{} }

type Ring struct{}

func New(entries int) (*Ring, error) { return nil, fmt.Errorf("%w: Linux only", ErrUnavailable) }

func (r *Ring) Cap() int                        { return 0 }
func (r *Ring) Run(ops []Op, res []int32) error { return errors.New("io_uring is Linux only") }
func (r *Ring) Close()                          {}
