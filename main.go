// Command incidents is a self-hosted incident management server backed by
// PostgreSQL. See README.md.
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "incidents:", err)
		os.Exit(1)
	}
}

// run is the whole program: it returns when ctx is cancelled or a signal
// arrives, after a graceful shutdown.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet(args[0], flag.ContinueOnError)
	flags.SetOutput(stderr)
	dev := flags.Bool("dev", false, "development mode: start a private PostgreSQL under -dev-dir unless DATABASE_URL is set, and generate a SECRET_KEY there")
	devDir := flags.String("dev-dir", ".dev", "where -dev keeps its PostgreSQL cluster and secret key")
	envFile := flags.String("env-file", ".env", "a KEY=VALUE file read before the environment (the environment wins); empty to read none")
	logLevel := flags.String("log-level", "info", "debug, info, warn or error")
	showVersion := flags.Bool("version", false, "print the version, VCS revision and Go version, and exit")
	healthcheck := flags.Bool("healthcheck", false, "GET /healthz of the server listening on ADDR (or PORT) on this host, and exit 0 if it answers 200: a container's HEALTHCHECK, where there is no curl")
	if err := flags.Parse(args[1:]); err != nil {
		return err
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, readBuildInfo())
		return err
	}
	if *healthcheck {
		return checkHealth(ctx, getenv)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *envFile != "" {
		f, err := os.Open(*envFile)
		switch {
		case err == nil:
			vars, err := parseDotEnv(f)
			f.Close()
			if err != nil {
				return err
			}
			getenv = withDotEnv(getenv, vars)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	cfg, err := loadConfig(getenv, *dev)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *dev {
		cluster, err := prepareDev(ctx, &cfg, *devDir, logger)
		if err != nil {
			return err
		}
		if cluster != nil {
			defer func() {
				if err := cluster.Stop(); err != nil {
					logger.Error("stop postgresql", "error", err)
				}
			}()
		}
	}

	if cfg.registrationOpen {
		logger.Warn("registration is open: anyone who can reach the server can create an account; set REGISTRATION=closed once your admin exists")
	}
	if !cfg.rateLimits {
		logger.Warn("rate limits are off (RATE_LIMITS=off)")
	}
	st, err := openStore(ctx, cfg.databaseURL, cfg.dbTimeout, cfg.dbMaxConns)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := newServer(cfg, st, logger)
	if err != nil {
		return err
	}

	streamCtx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	if err := srv.startBackground(streamCtx); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	httpServer := &http.Server{
		Handler:           srv.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Shutdown does not wait for hijacked WebSocket connections: the hub
	// closes them with "going away" and ends SSE streams.
	httpServer.RegisterOnShutdown(srv.hub.shutdown)
	if cfg.metricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.metricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		metricsServer := &http.Server{
			Handler:           srv.metricsRoutes(),
			ReadHeaderTimeout: 10 * time.Second,
			// A scrape is short: no connection stays open for long.
			ReadTimeout:  10 * time.Second,
			WriteTimeout: 30 * time.Second,
			IdleTimeout:  2 * time.Minute,
			ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		go metricsServer.Serve(mln)
		defer metricsServer.Close()
		logger.Info("serving metrics", "url", "http://"+displayAddr(mln.Addr())+"/metrics")
	}
	url := "http://" + displayAddr(ln.Addr())
	logger.Info("listening", "url", url, "docs", url+"/docs")

	serveErr := make(chan error, 1)
	go func() { serveErr <- httpServer.Serve(ln) }()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		logger.Warn("shutdown: requests still running were cut off", "error", err)
	}
	srv.hub.wait(shutdownCtx)
	if !srv.drainWebhooks(shutdownCtx) {
		logger.Warn("shutdown: webhook attempts still in flight were cut off; they are sent again once their lease expires")
	}
	return nil
}

// checkHealth is -healthcheck: a GET of /healthz on this host, at the port
// the server's ADDR or PORT gives it.
func checkHealth(ctx context.Context, getenv func(string) string) error {
	addr := getenv("ADDR")
	if addr == "" {
		addr = ":" + cmp.Or(getenv("PORT"), "8080")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: ADDR %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET /healthz answered %d", resp.StatusCode)
	}
	return nil
}

// prepareDev fills in what -dev provides: a private PostgreSQL cluster (unless
// DATABASE_URL is set) and a secret key kept in dir. The cluster, if one was
// started, must be stopped by the caller.
func prepareDev(ctx context.Context, cfg *config, dir string, logger *slog.Logger) (*pgCluster, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if len(cfg.secretKey) == 0 {
		key, err := devSecretKey(filepath.Join(dir, "secret_key"))
		if err != nil {
			return nil, err
		}
		cfg.secretKey = key
	}
	if cfg.databaseURL != "" {
		return nil, nil
	}
	cluster, err := startPGCluster(ctx, dir, pgClusterOptions{})
	if err != nil {
		return nil, fmt.Errorf("start the -dev PostgreSQL: %w", err)
	}
	if err := cluster.CreateDatabase(ctx, "incidents"); err != nil {
		cluster.Stop()
		return nil, err
	}
	cfg.databaseURL = cluster.DSN("incidents")
	logger.Info("dev postgresql running", "data", cluster.dataDir, "psql", fmt.Sprintf("psql %q", cluster.DSN("incidents")))
	return cluster, nil
}

// devSecretKey reads the dev secret key, generating it on first use.
func devSecretKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) >= minSecretKeyBytes {
		return bytes.TrimSpace(b), nil
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	key := []byte(hex.EncodeToString(raw))
	if err := os.WriteFile(path, append(key, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write dev secret key: %w", err)
	}
	return key, nil
}

// displayAddr turns a listening address into one a browser can open.
func displayAddr(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
