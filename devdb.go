package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgCluster is a private PostgreSQL cluster started from the server binaries
// on this machine. The -dev mode and the tests share it, so the path a
// developer runs is the path the tests run.
type pgCluster struct {
	bin     string // directory holding initdb, pg_ctl and postgres
	dataDir string
	sockDir string
	logFile string
	// runAs is set when this process is root: initdb and postgres refuse to
	// run as root, so they run as the postgres system user instead.
	runAs *syscall.Credential
	// users holds this process's shared lock on usersLock while it uses
	// the cluster: several -dev servers may share one directory (that is
	// how to try replicas on one machine), and the last to stop stops
	// PostgreSQL.
	users *os.File
}

// pgClusterOptions tunes a cluster for its use.
type pgClusterOptions struct {
	// throwaway trades durability for speed (fsync off), for test clusters.
	throwaway bool
}

// pgSocketPort only names the socket file (.s.PGSQL.<port>); the cluster
// listens on no TCP port, so it cannot collide with another server.
const pgSocketPort = 5432

// maxSocketPath is the room a unix socket path has in sockaddr_un on Linux.
const maxSocketPath = 107

// findPGBin finds the directory of the PostgreSQL server binaries: pg_ctl on
// PATH first, then the newest /usr/lib/postgresql/*/bin (Debian and Ubuntu
// keep them off PATH).
func findPGBin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt install postgresql) " +
		"so that pg_ctl and initdb are on PATH or under /usr/lib/postgresql/<version>/bin, or set DATABASE_URL to an existing server")
}

// pgMajor reads the version number out of /usr/lib/postgresql/<n>/bin.
func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// startPGCluster starts (creating it first if needed) a cluster whose files
// live under dir: the data in dir/postgres, the socket in dir/sock. It only
// listens on that unix socket.
func startPGCluster(ctx context.Context, dir string, opts pgClusterOptions) (*pgCluster, error) {
	bin, err := findPGBin()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &pgCluster{
		bin:     bin,
		dataDir: filepath.Join(dir, "postgres"),
		sockDir: filepath.Join(dir, "sock"),
		logFile: filepath.Join(dir, "postgres.log"),
	}
	if n := len(c.sockDir) + len("/.s.PGSQL.5432"); n > maxSocketPath {
		return nil, fmt.Errorf("the PostgreSQL socket path under %s would be %d bytes, over the %d-byte limit of unix sockets: run from a shorter directory", dir, n, maxSocketPath)
	}
	if os.Geteuid() == 0 {
		if c.runAs, err = postgresUser(); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{dir, c.sockDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Starting and stopping hold setupLock: two processes never
	// both set up or start the cluster, and none stops it while another
	// starts.
	unlock, err := lockFile(ctx, c.setupLock(), syscall.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock.Close()
	if err := c.handOver(dir); err != nil {
		return nil, err
	}
	if err := c.start(ctx, opts); err != nil {
		return nil, err
	}
	if c.users, err = lockFile(ctx, c.usersLock(), syscall.LOCK_SH); err != nil {
		return nil, err
	}
	return c, nil
}

// setupLock is the file a process holds exclusively while it starts or
// stops the cluster.
func (c *pgCluster) setupLock() string {
	return filepath.Join(filepath.Dir(c.dataDir), "setup.lock")
}

// usersLock is the file every process that uses the cluster holds a shared
// lock on.
func (c *pgCluster) usersLock() string {
	return filepath.Join(filepath.Dir(c.dataDir), "users.lock")
}

// lockFile opens path, creating it if needed, and takes the flock how on
// it (with LOCK_NB, one try); closing the file lets go. A wait ends with
// ctx, so Ctrl-C works while another process holds the lock.
func lockFile(ctx context.Context, path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || how&syscall.LOCK_NB != 0 {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another process's lock on %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// start initializes the cluster if it is new and starts it unless it runs.
func (c *pgCluster) start(ctx context.Context, opts pgClusterOptions) error {
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		out, err := c.command(ctx, "initdb", "-D", c.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync").CombinedOutput()
		if err != nil {
			return fmt.Errorf("initdb: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	if c.running(ctx) {
		return nil // another -dev server in the same directory started it
	}
	settings := []string{
		"-k " + c.sockDir,
		"-c listen_addresses=''",
		"-p " + strconv.Itoa(pgSocketPort),
		"-c max_connections=300",
	}
	if opts.throwaway {
		settings = append(settings, "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
	}
	out, err := c.command(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.dataDir, "-l", c.logFile, "-o", strings.Join(settings, " ")).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(c.logFile)
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, bytes.TrimSpace(out), lastLines(log, 10))
	}
	return nil
}

func (c *pgCluster) running(ctx context.Context) bool {
	return c.command(ctx, "pg_ctl", "status", "-D", c.dataDir).Run() == nil
}

// postgresUser is who runs the cluster when this process is root.
func postgresUser() (*syscall.Credential, error) {
	u, err := osuser.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root, and PostgreSQL refuses to run as root: create a 'postgres' system user " +
			"(Debian's postgresql package does), run as an unprivileged user, or set DATABASE_URL to an existing server")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// handOver gives the cluster's directory to the postgres user when we run as
// root, after checking that the user can reach it at all.
func (c *pgCluster) handOver(dir string) error {
	if c.runAs == nil {
		return nil
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		reachable := info.Mode().Perm()&0o001 != 0 ||
			(st.Uid == c.runAs.Uid && info.Mode().Perm()&0o100 != 0) ||
			(st.Gid == c.runAs.Gid && info.Mode().Perm()&0o010 != 0)
		if !reachable {
			return fmt.Errorf("PostgreSQL runs as the postgres user (initdb refuses root), which cannot enter %s: run 'chmod o+x %s' or use another directory", d, d)
		}
		if d == "/" {
			break
		}
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err == nil {
			err = os.Lchown(path, int(c.runAs.Uid), int(c.runAs.Gid))
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a file a running cluster removed meanwhile
		}
		return err
	})
}

// command runs one of the server binaries, as the postgres user when needed.
func (c *pgCluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = filepath.Dir(c.dataDir)
	if c.runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.runAs}
	}
	return cmd
}

// DSN is the connection string for database dbname on this cluster.
func (c *pgCluster) DSN(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", c.sockDir, pgSocketPort, dbname)
}

// CreateDatabase creates dbname unless it exists.
func (c *pgCluster) CreateDatabase(ctx context.Context, dbname string) error {
	db, err := sql.Open("postgres", c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, dbname).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", dbname, err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(dbname)); err != nil {
		return fmt.Errorf("create database %s: %w", dbname, err)
	}
	return nil
}

// Stop lets go of the cluster and stops it unless another process still
// uses it.
func (c *pgCluster) Stop() error {
	if c.users == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unlock, err := lockFile(ctx, c.setupLock(), syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock.Close()
	c.users.Close()
	c.users = nil
	last, err := lockFile(ctx, c.usersLock(), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil // another process uses it and stops it last
	}
	if err != nil {
		return err
	}
	defer last.Close()
	if !c.running(ctx) {
		return nil
	}
	out, err := c.command(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.dataDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// lastLines keeps the end of a log for an error message.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
