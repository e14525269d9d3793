package uring

import (
	"errors"
	"math"
)

// ErrUnavailable is what New's error wraps when this kernel cannot give
// the package what it needs: callers then make a system call per
// operation. Any other error from New is a failure worth reporting.
var ErrUnavailable = errors.New("io_uring unavailable")

// Unknown is the result of an operation the kernel took but whose
// completion a failed Run did not see: it may or may not have happened.
// An operation the kernel never took has the result -ECANCELED.
const Unknown = math.MinInt32
