package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// originalDDL is the schema the original FastAPI service created: varchar
// columns with limits that disagreed with its validation, a naive
// timestamp, no indexes beyond the keys.
const originalDDL = `
CREATE TABLE users (
	id SERIAL PRIMARY KEY,
	username VARCHAR(20) UNIQUE NOT NULL,
	password_hashed VARCHAR(255) NOT NULL
);
CREATE TABLE incidents (
	id SERIAL PRIMARY KEY,
	title VARCHAR(100) NOT NULL,
	description VARCHAR(500),
	severity VARCHAR(20) NOT NULL,
	status VARCHAR(20) DEFAULT 'open',
	created_at TIMESTAMP DEFAULT now()
);`

func TestUpgradeOriginalDatabaseInPlace(t *testing.T) {
	dsn := newDatabase(t, "template0")
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(originalDDL); err != nil {
		t.Fatalf("original DDL: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO users (username, password_hashed) VALUES ('olduser', $1)`, legacyHash("admin123")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO incidents (title, description, severity, status, created_at) VALUES
		('old open', NULL, 'high', 'open', '2024-03-01 12:00:00'),
		('old resolved', 'was fixed', 'low', 'resolved', '2024-03-02 08:30:00')`); err != nil {
		t.Fatal(err)
	}

	// Two replicas start at once on the old database; then one restarts.
	var wg sync.WaitGroup
	stores := make([]*store, 3)
	errs := make([]error, 3)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = openStore(context.Background(), dsn, 5*time.Second, defaultDBMaxConns)
		}()
	}
	wg.Wait()
	stores[2], errs[2] = openStore(context.Background(), dsn, 5*time.Second, defaultDBMaxConns)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("store %d on the original database: %v", i, err)
		}
		defer stores[i].Close()
	}

	ts := newTestServerOn(t, stores[0], testConfig())
	storedHash := func() string {
		var h string
		if err := db.QueryRow(`SELECT password_hashed FROM users WHERE username = 'olduser'`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	original := storedHash()
	ts.request(t, "POST", "/api/v1/login", `{"username":"olduser","password":"admin124"}`).mustStatus(t, "old user, wrong password", http.StatusUnauthorized)
	if storedHash() != original {
		t.Fatal("a failed login replaced the original's hash")
	}
	token := ts.login(t, "olduser", "admin123")
	// The original's slower hash gives way to one of today's at the first
	// login, so it stops showing that the name exists; nothing else changes.
	if h := storedHash(); !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash after the first login = %.32s..., want today's parameters", h)
	}
	ts.request(t, "GET", "/api/v1/me", "", bearer(token)...).mustStatus(t, "token of the login that replaced the hash", http.StatusOK)
	ts.login(t, "olduser", "admin123")

	var list []incident
	ts.request(t, "GET", "/api/v1/incidents", "").mustStatus(t, "list old incidents", http.StatusOK).json(t, &list)
	if len(list) != 2 {
		t.Fatalf("listed %d old incidents, want 2", len(list))
	}
	old := list[1]
	if old.Title != "old open" || old.Description != "" || old.Status != "open" ||
		old.CreatedAt.Format(time.RFC3339) != "2024-03-01T12:00:00Z" || !old.UpdatedAt.Equal(old.CreatedAt) {
		t.Errorf("old incident = %+v, want its values with created_at 2024-03-01T12:00:00Z read as UTC", old)
	}
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", old.ID), "", bearer(token)...).mustStatus(t, "resolve old incident", http.StatusOK)
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", list[0].ID), "", bearer(token)...).mustStatus(t, "resolve already resolved old incident", http.StatusConflict)

	// The widened columns: the original's limits gave 500s here.
	ts.register(t, strings.Repeat("u", 50), "password1")
	long := fmt.Sprintf(`{"title":%q,"description":%q,"severity":"critical"}`, strings.Repeat("t", 200), strings.Repeat("d", 10000))
	ts.request(t, "POST", "/api/v1/incidents", long).mustStatus(t, "long incident on the upgraded table", http.StatusCreated)
	ts.request(t, "POST", "/api/v1/register", `{"username":"OLDUSER","password":"password1"}`).mustStatus(t, "case-duplicate of an old user", http.StatusConflict)

	var checks int
	db.QueryRow(`SELECT count(*) FROM pg_constraint WHERE conrelid = 'incidents'::regclass AND contype = 'c'`).Scan(&checks)
	if checks < 2 {
		t.Errorf("CHECK constraints on incidents = %d, want severity and status checks", checks)
	}
	if _, err := db.Exec(`INSERT INTO incidents (title, severity) VALUES ('x', 'urgent')`); err == nil {
		t.Error("the upgraded table accepts severity 'urgent'")
	}
}
