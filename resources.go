package main

import (
	"context"
	"errors"
	"net/http"
)

// The admin-managed resources (integrations, heartbeats, webhooks,
// escalation policies) are listed, read and deleted alike; each has its
// own create and update, whose bodies differ.

// listHandler handles GET of a collection: every item list returns, in its
// order. Collections are small by nature (a team's integrations, not its
// incidents), so they are not paged.
func listHandler[T any](list func(context.Context) ([]T, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		items, err := list(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, items)
	}
}

// getHandler handles GET of the item with the path's {id}; notFound when
// there is none.
func getHandler[T any](get func(context.Context, int64) (T, error), notFound error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r)
		if err != nil {
			return err
		}
		item, err := get(r.Context(), id)
		if err != nil {
			return notFoundAs(err, notFound)
		}
		return writeJSON(w, http.StatusOK, item)
	}
}

// deleteHandler handles DELETE of the kind (a key of adminTables) with the
// path's {id}, audited as "<kind>.deleted". What depends on it goes with
// it (a webhook's deliveries), but for rows that refer to it and must not
// lose it unseen (an escalation policy's webhooks): those make it inUse, a
// 409. Kinds nothing refers to pass nil.
func (s *server) deleteHandler(kind string, notFound, inUse error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r)
		if err != nil {
			return err
		}
		err = s.store.DeleteAudited(r.Context(), kind, id, s.adminAudit(r, kind+".deleted"), s.now())
		switch {
		case errors.Is(err, errReferenced) && inUse != nil:
			return inUse
		case err != nil:
			return notFoundAs(err, notFound)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}
