package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// testDB is the PostgreSQL server of this test binary: a throwaway cluster
// started by TestMain, or the server TEST_DATABASE_URL names.
var testDB struct {
	baseDSN  string // a DSN of the server; withDBName picks the database
	template string // a database with the schema applied, cloned per test
	counter  atomic.Int64
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx := context.Background()
	testDB.baseDSN = os.Getenv("TEST_DATABASE_URL")
	if testDB.baseDSN == "" {
		dir, err := os.MkdirTemp("", "incidents-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: temp dir:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		cluster, err := startPGCluster(ctx, dir, pgClusterOptions{throwaway: true})
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: the tests need a real PostgreSQL and could not start one: %v\n"+
				"Install the PostgreSQL server binaries (Debian: apt install postgresql) or set TEST_DATABASE_URL.\n", err)
			return 1
		}
		defer cluster.Stop()
		testDB.baseDSN = cluster.DSN("postgres")
	}
	testDB.template = fmt.Sprintf("incidents_template_%d", os.Getpid())
	if err := createTemplate(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: prepare the template database:", err)
		return 1
	}
	defer dropDatabase(testDB.template)
	return checkStatuses(m.Run())
}

// createTemplate makes the database every test database is cloned from.
func createTemplate(ctx context.Context) error {
	admin, err := sql.Open("postgres", testDB.baseDSN)
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(testDB.template)); err != nil {
		return err
	}
	st, err := openStore(ctx, withDBName(testDB.baseDSN, testDB.template), 5*time.Second, defaultDBMaxConns)
	if err != nil {
		return err
	}
	return st.Close()
}

func dropDatabase(name string) error {
	admin, err := sql.Open("postgres", testDB.baseDSN)
	if err != nil {
		return err
	}
	defer admin.Close()
	_, err = admin.Exec("DROP DATABASE IF EXISTS " + quoteIdent(name) + " WITH (FORCE)")
	return err
}

// withDBName points a DSN, URL or key=value, at another database.
func withDBName(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}

// newTestDSN creates a fresh database with the schema for one test and
// returns its DSN. The database is dropped when the test ends.
func newTestDSN(t testing.TB) string {
	t.Helper()
	return newDatabase(t, testDB.template)
}

// newDatabase creates a database from template for one test.
func newDatabase(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), testDB.counter.Add(1))
	admin, err := sql.Open("postgres", testDB.baseDSN)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + quoteIdent(name) + " TEMPLATE " + quoteIdent(template) + " STRATEGY FILE_COPY"); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(name); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	// A session time zone other than UTC: the API speaks UTC whatever the
	// database's, and a time that skipped the conversion shows.
	return withDSNParam(withDBName(testDB.baseDSN, name), "timezone", "Asia/Kolkata")
}

// withDSNParam is dsn with a connection parameter set (PostgreSQL takes
// the ones lib/pq does not know as settings of the session).
func withDSNParam(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value
}
