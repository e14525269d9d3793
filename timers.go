package main

import (
	"context"
	"time"
)

// timerInterval is how often a replica looks for work that is due.
const timerInterval = time.Second

// runTimers does the timed work (overdue heartbeats, escalations, webhook
// deliveries) until ctx ends: the one background loop, on every replica.
// Work that is due is claimed in PostgreSQL, so it is done once whichever
// replica gets there first.
func (s *server) runTimers(ctx context.Context) {
	tick := time.NewTicker(timerInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.runTimedWork(ctx)
	}
}

// runTimedWork does once what is due now. Webhook attempts run on after it
// returns; the next tick does not wait for them.
func (s *server) runTimedWork(ctx context.Context) {
	if _, err := s.store.OverdueHeartbeats(ctx, s.cfg.reopenWindow, s.now()); err != nil && ctx.Err() == nil {
		s.log.Warn("check heartbeats", "error", err)
	}
	for {
		n, err := s.store.Escalate(ctx, s.now())
		if err != nil && ctx.Err() == nil {
			s.log.Warn("escalate incidents", "error", err)
		}
		if err != nil || n < escalationBatch {
			break
		}
	}
	s.deliverWebhooks(ctx)
}
