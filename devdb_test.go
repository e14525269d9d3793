package main

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Waiting for another process's lock on the -dev directory ends when the
// server is told to stop; a try without waiting says the lock is taken.
func TestLockFileWaitEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.lock")
	held, err := lockFile(context.Background(), path, syscall.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	if _, err := lockFile(context.Background(), path, syscall.LOCK_SH|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("try for a held lock: %v, want EWOULDBLOCK", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path, syscall.LOCK_SH); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait for a held lock until the context ends: %v, want the context's error", err)
	}
	held.Close()
	shared, err := lockFile(context.Background(), path, syscall.LOCK_SH)
	if err != nil {
		t.Fatalf("lock once released: %v", err)
	}
	shared.Close()
}
