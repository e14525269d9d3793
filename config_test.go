package main

import (
	"strings"
	"testing"
	"time"
)

// with is a valid environment with kv (name, value pairs) set on top.
func with(kv ...string) map[string]string {
	env := map[string]string{"DATABASE_URL": "postgres://u:p@localhost/incidents", "SECRET_KEY": strings.Repeat("s", 32)}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

func TestLoadConfig(t *testing.T) {
	secret := strings.Repeat("s", 32)
	for _, tt := range []struct {
		name     string
		env      map[string]string
		dev      bool
		wantErrs []string // substrings the one error message must contain
		check    func(t *testing.T, cfg config)
	}{
		{name: "defaults", env: with(), check: func(t *testing.T, cfg config) {
			if cfg.algorithm != "HS256" || cfg.tokenTTL != time.Hour || cfg.addr != ":8080" || len(cfg.allowedOrigins) != 0 {
				t.Errorf("defaults = %q %v %q %v, want HS256 1h :8080 []", cfg.algorithm, cfg.tokenTTL, cfg.addr, cfg.allowedOrigins)
			}
		}},
		{name: "everything missing lists every problem", env: map[string]string{}, wantErrs: []string{"DATABASE_URL is required", "SECRET_KEY is required"}},
		{name: "dev needs neither", env: map[string]string{}, dev: true},
		{name: "short secret", env: with("SECRET_KEY", "short"), wantErrs: []string{"SECRET_KEY is 5 bytes; it must be at least 32"}},
		{name: "short secret in dev too", env: with("SECRET_KEY", "short"), dev: true, wantErrs: []string{"SECRET_KEY is 5 bytes"}},
		{name: "alg none refused", env: with("ALGORITHM", "none"), wantErrs: []string{`ALGORITHM must be HS256, HS384 or HS512, not "none"`}},
		{name: "alg RS256 refused", env: with("ALGORITHM", "RS256"), wantErrs: []string{"ALGORITHM must be"}},
		{name: "HS512", env: with("ALGORITHM", "HS512"), check: func(t *testing.T, cfg config) {
			if cfg.algorithm != "HS512" {
				t.Errorf("algorithm = %q, want HS512", cfg.algorithm)
			}
		}},
		{name: "expiry", env: with("ACCESS_TOKEN_EXPIRE_MINUTES", "15"), check: func(t *testing.T, cfg config) {
			if cfg.tokenTTL != 15*time.Minute {
				t.Errorf("tokenTTL = %v, want 15m", cfg.tokenTTL)
			}
		}},
		{name: "bad expiry", env: with("ACCESS_TOKEN_EXPIRE_MINUTES", "soon"), wantErrs: []string{"ACCESS_TOKEN_EXPIRE_MINUTES must be"}},
		{name: "zero expiry", env: with("ACCESS_TOKEN_EXPIRE_MINUTES", "0"), wantErrs: []string{"ACCESS_TOKEN_EXPIRE_MINUTES must be"}},
		{name: "metrics on the main listener, open", env: with(), check: func(t *testing.T, cfg config) {
			if cfg.metricsAddr != "" || cfg.metricsToken != "" {
				t.Errorf("metricsAddr, metricsToken = %q, %q; want both empty", cfg.metricsAddr, cfg.metricsToken)
			}
		}},
		{name: "metrics address and token", env: with("METRICS_ADDR", "127.0.0.1:9090", "METRICS_TOKEN", "0123456789abcdef"), check: func(t *testing.T, cfg config) {
			if cfg.metricsAddr != "127.0.0.1:9090" || cfg.metricsToken != "0123456789abcdef" {
				t.Errorf("metricsAddr, metricsToken = %q, %q", cfg.metricsAddr, cfg.metricsToken)
			}
		}},
		{name: "metrics on a port", env: with("METRICS_ADDR", ":9090")},
		{name: "bad metrics address", env: with("METRICS_ADDR", "9090"), wantErrs: []string{`METRICS_ADDR must be host:port or :port, such as 127.0.0.1:9090, not "9090"`}},
		{name: "metrics address without a port", env: with("METRICS_ADDR", "localhost:"), wantErrs: []string{"METRICS_ADDR must be"}},
		{name: "short metrics token", env: with("METRICS_TOKEN", "hunter2"), wantErrs: []string{"METRICS_TOKEN must be at least 16 characters"}},
		{name: "metrics token with spaces", env: with("METRICS_TOKEN", " 0123456789abcdef"), wantErrs: []string{"METRICS_TOKEN must be"}},
		{name: "postgresql scheme", env: with("DATABASE_URL", "postgresql://u@h/db")},
		{name: "key=value DSN", env: with("DATABASE_URL", "host=/run/postgresql dbname=incidents")},
		{name: "bad DSN", env: with("DATABASE_URL", "mysql://u@h/db"), wantErrs: []string{"DATABASE_URL must be"}},
		{name: "origins", env: with("ALLOWED_ORIGINS", " https://a.example , http://b.example:8080/ ,"), check: func(t *testing.T, cfg config) {
			want := []string{"https://a.example", "http://b.example:8080"}
			if strings.Join(cfg.allowedOrigins, " ") != strings.Join(want, " ") {
				t.Errorf("allowedOrigins = %q, want %q", cfg.allowedOrigins, want)
			}
		}},
		{name: "public url", env: with("PUBLIC_URL", "https://incidents.example.com/"), check: func(t *testing.T, cfg config) {
			if cfg.publicURL != "https://incidents.example.com" {
				t.Errorf("publicURL = %q, want https://incidents.example.com", cfg.publicURL)
			}
		}},
		{name: "webhook deny private", env: with("WEBHOOK_DENY_PRIVATE", "true"), check: func(t *testing.T, cfg config) {
			if !cfg.webhookDenyPrivate {
				t.Error("webhookDenyPrivate = false, want true")
			}
		}},
		{name: "bad webhook deny private", env: with("WEBHOOK_DENY_PRIVATE", "yes"), wantErrs: []string{`WEBHOOK_DENY_PRIVATE must be true or false`}},
		{name: "bad public url", env: with("PUBLIC_URL", "incidents.example.com"), wantErrs: []string{`PUBLIC_URL must be an absolute http or https URL`}},
		{name: "bad origin", env: with("ALLOWED_ORIGINS", "a.example"), wantErrs: []string{`ALLOWED_ORIGINS entry "a.example"`}},
		{name: "PORT", env: with("PORT", "9000"), check: func(t *testing.T, cfg config) {
			if cfg.addr != ":9000" {
				t.Errorf("addr = %q, want :9000", cfg.addr)
			}
		}},
		{name: "ADDR wins over PORT", env: with("PORT", "9000", "ADDR", "127.0.0.1:7000"), check: func(t *testing.T, cfg config) {
			if cfg.addr != "127.0.0.1:7000" {
				t.Errorf("addr = %q, want 127.0.0.1:7000", cfg.addr)
			}
		}},
		{name: "bad PORT", env: with("PORT", "http"), wantErrs: []string{"PORT must be a port number"}},
		{name: "REOPEN_WINDOW default", env: with(), check: func(t *testing.T, cfg config) {
			if cfg.reopenWindow != 5*time.Minute {
				t.Errorf("reopenWindow = %v, want 5m", cfg.reopenWindow)
			}
		}},
		{name: "REOPEN_WINDOW 0 never reopens", env: with("REOPEN_WINDOW", "0"), check: func(t *testing.T, cfg config) {
			if cfg.reopenWindow != 0 {
				t.Errorf("reopenWindow = %v, want 0", cfg.reopenWindow)
			}
		}},
		{name: "REOPEN_WINDOW 10m", env: with("REOPEN_WINDOW", "10m"), check: func(t *testing.T, cfg config) {
			if cfg.reopenWindow != 10*time.Minute {
				t.Errorf("reopenWindow = %v, want 10m", cfg.reopenWindow)
			}
		}},
		{name: "bad REOPEN_WINDOW", env: with("REOPEN_WINDOW", "soon"),
			wantErrs: []string{`REOPEN_WINDOW must be a duration such as 5m, or 0 to never reopen, not "soon"`}},
		{name: "negative REOPEN_WINDOW", env: with("REOPEN_WINDOW", "-5m"),
			wantErrs: []string{`REOPEN_WINDOW must be a duration such as 5m, or 0 to never reopen, not "-5m"`}},
		{name: "WS_PING_INTERVAL default", env: with(), check: func(t *testing.T, cfg config) {
			if cfg.wsPingInterval != 30*time.Second {
				t.Errorf("wsPingInterval = %v, want 30s", cfg.wsPingInterval)
			}
		}},
		{name: "WS_PING_INTERVAL 5s", env: with("WS_PING_INTERVAL", "5s"), check: func(t *testing.T, cfg config) {
			if cfg.wsPingInterval != 5*time.Second {
				t.Errorf("wsPingInterval = %v, want 5s", cfg.wsPingInterval)
			}
		}},
		{name: "WS_PING_INTERVAL 0 refused", env: with("WS_PING_INTERVAL", "0"),
			wantErrs: []string{`WS_PING_INTERVAL must be a duration from 1s to 1h, such as 30s, not "0"`}},
		{name: "WS_PING_INTERVAL 2h refused", env: with("WS_PING_INTERVAL", "2h"),
			wantErrs: []string{`WS_PING_INTERVAL must be a duration from 1s to 1h, such as 30s, not "2h"`}},
		{name: "DB_MAX_CONNS default", env: with(), check: func(t *testing.T, cfg config) {
			if cfg.dbMaxConns != 10 {
				t.Errorf("dbMaxConns = %d, want 10", cfg.dbMaxConns)
			}
		}},
		{name: "DB_MAX_CONNS 4", env: with("DB_MAX_CONNS", "4"), check: func(t *testing.T, cfg config) {
			if cfg.dbMaxConns != 4 {
				t.Errorf("dbMaxConns = %d, want 4", cfg.dbMaxConns)
			}
		}},
		{name: "DB_MAX_CONNS 0 refused", env: with("DB_MAX_CONNS", "0"),
			wantErrs: []string{`DB_MAX_CONNS must be a whole number from 1 to 1000, not "0"`}},
		{name: "DB_MAX_CONNS many refused", env: with("DB_MAX_CONNS", "many"),
			wantErrs: []string{`DB_MAX_CONNS must be a whole number from 1 to 1000, not "many"`}},
		{name: "docs scripts", env: with("DOCS_SWAGGER_JS", "/static/swagger.js", "DOCS_REDOC_JS", "/static/redoc.js"), check: func(t *testing.T, cfg config) {
			if cfg.docsSwaggerJS != "/static/swagger.js" || cfg.docsRedocJS != "/static/redoc.js" {
				t.Errorf("docs scripts = %q %q", cfg.docsSwaggerJS, cfg.docsRedocJS)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(func(k string) string { return tt.env[k] }, tt.dev)
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("loadConfig error = %v, want none", err)
				}
				if tt.check != nil {
					tt.check(t, cfg)
				}
				return
			}
			if err == nil {
				t.Fatalf("loadConfig error = nil, want one mentioning %q", tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("loadConfig error = %q, want it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("loadConfig error %q contains the secret", err)
			}
			if token := strings.TrimSpace(tt.env["METRICS_TOKEN"]); token != "" && strings.Contains(err.Error(), token) {
				t.Errorf("loadConfig error %q contains the metrics token", err)
			}
		})
	}
}

func TestParseDotEnv(t *testing.T) {
	vars, err := parseDotEnv(strings.NewReader(`
# a comment
DATABASE_URL=postgres://u:p@localhost/incidents
export SECRET_KEY="with spaces and # hash"
ALGORITHM='HS384'
ADDR=:9000 # trailing comment
EMPTY=
PUBLIC_URL="https://incidents.example.com" # quoted, then a comment
QUOTED_EMPTY=''
`))
	if err != nil {
		t.Fatalf("parseDotEnv: %v", err)
	}
	want := map[string]string{
		"DATABASE_URL": "postgres://u:p@localhost/incidents",
		"SECRET_KEY":   "with spaces and # hash",
		"ALGORITHM":    "HS384",
		"ADDR":         ":9000",
		"EMPTY":        "",
		"PUBLIC_URL":   "https://incidents.example.com",
		"QUOTED_EMPTY": "",
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
	if len(vars) != len(want) {
		t.Errorf("got %d variables, want %d: %v", len(vars), len(want), vars)
	}
	for _, bad := range []string{"NOT A PAIR\n", "KEY=\"no end\n", "KEY='a' b\n", "KEY=\"\n"} {
		if _, err := parseDotEnv(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("parseDotEnv(%q) error = %v, want one naming line 1", bad, err)
		}
	}

	getenv := withDotEnv(func(k string) string { return map[string]string{"ALGORITHM": "HS512"}[k] }, vars)
	if got := getenv("ALGORITHM"); got != "HS512" {
		t.Errorf("ALGORITHM = %q, want the real environment's HS512", got)
	}
	if got := getenv("ADDR"); got != ":9000" {
		t.Errorf("ADDR = %q, want .env's :9000", got)
	}
}

func TestLoadConfigAccess(t *testing.T) {
	defaults := limitSettings{
		loginUser: countLimit{n: 5, window: 15 * time.Minute},
		loginIP:   countLimit{n: 20, window: time.Minute},
		register:  countLimit{n: 10, window: time.Hour},
		ingest:    rateLimit{rate: 20, burst: 100},
		ingestKey: rateLimit{rate: 100, burst: 500},
	}
	// limitsWith returns the default limits changed by f.
	limitsWith := func(f func(*limitSettings)) limitSettings {
		ls := defaults
		f(&ls)
		return ls
	}
	type switches struct {
		registrationOpen, publicIngest, publicRead, rateLimits bool
	}
	open := switches{true, true, true, true}
	for _, tt := range []struct {
		name        string
		env         map[string]string
		wantAccess  switches
		wantLimits  limitSettings
		wantProxies string // the prefixes, comma-separated
		wantErrs    []string
	}{
		{name: "defaults", env: with(), wantAccess: open, wantLimits: defaults},
		{name: "everything closed", env: with("REGISTRATION", "closed", "PUBLIC_INGEST", "false", "PUBLIC_READ", "false", "RATE_LIMITS", "off"),
			wantAccess: switches{}, wantLimits: defaults},
		{name: "everything open, spelled loosely", env: with("REGISTRATION", " Open ", "PUBLIC_INGEST", "TRUE", "PUBLIC_READ", "True", "RATE_LIMITS", "ON"),
			wantAccess: open, wantLimits: defaults},
		{name: "bad REGISTRATION", env: with("REGISTRATION", "maybe"), wantErrs: []string{`REGISTRATION must be open or closed, not "maybe"`}},
		{name: "bad PUBLIC_INGEST", env: with("PUBLIC_INGEST", "no"), wantErrs: []string{`PUBLIC_INGEST must be true or false, not "no"`}},
		{name: "bad PUBLIC_READ", env: with("PUBLIC_READ", "1"), wantErrs: []string{`PUBLIC_READ must be true or false, not "1"`}},
		{name: "bad RATE_LIMITS", env: with("RATE_LIMITS", "disabled"), wantErrs: []string{`RATE_LIMITS must be on or off, not "disabled"`}},
		{name: "count limits", env: with("LOGIN_RATE_LIMIT", "3/10m", "LOGIN_IP_RATE_LIMIT", "100/h", "REGISTER_RATE_LIMIT", "2/1h30m"),
			wantAccess: open, wantLimits: limitsWith(func(ls *limitSettings) {
				ls.loginUser = countLimit{n: 3, window: 10 * time.Minute}
				ls.loginIP = countLimit{n: 100, window: time.Hour}
				ls.register = countLimit{n: 2, window: 90 * time.Minute}
			})},
		{name: "count limits off", env: with("LOGIN_RATE_LIMIT", "0", "LOGIN_IP_RATE_LIMIT", "0", "REGISTER_RATE_LIMIT", "0"),
			wantAccess: open, wantLimits: limitsWith(func(ls *limitSettings) {
				ls.loginUser, ls.loginIP, ls.register = countLimit{}, countLimit{}, countLimit{}
			})},
		{name: "bad LOGIN_RATE_LIMIT", env: with("LOGIN_RATE_LIMIT", "5"),
			wantErrs: []string{`LOGIN_RATE_LIMIT: want a count per duration like 5/15m, or 0 for none, not "5"`}},
		{name: "bad LOGIN_IP_RATE_LIMIT", env: with("LOGIN_IP_RATE_LIMIT", "many/1m"),
			wantErrs: []string{`LOGIN_IP_RATE_LIMIT: want a count per duration like 5/15m, or 0 for none, not "many/1m"`}},
		{name: "bad REGISTER_RATE_LIMIT", env: with("REGISTER_RATE_LIMIT", "10/0s"),
			wantErrs: []string{`REGISTER_RATE_LIMIT: want a count per duration like 5/15m, or 0 for none, not "10/0s"`}},
		{name: "ingest rates and bursts", env: with("INGEST_RATE_LIMIT", "600/1m", "INGEST_BURST", "50", "INGEST_KEY_RATE_LIMIT", "1/s", "INGEST_KEY_BURST", "1000000"),
			wantAccess: open, wantLimits: limitsWith(func(ls *limitSettings) {
				ls.ingest = rateLimit{rate: 10, burst: 50}
				ls.ingestKey = rateLimit{rate: 1, burst: 1_000_000}
			})},
		{name: "ingest rates off", env: with("INGEST_RATE_LIMIT", "0", "INGEST_KEY_RATE_LIMIT", "0/s"),
			wantAccess: open, wantLimits: limitsWith(func(ls *limitSettings) {
				ls.ingest.rate, ls.ingestKey.rate = 0, 0
			})},
		{name: "bad INGEST_RATE_LIMIT", env: with("INGEST_RATE_LIMIT", "fast"),
			wantErrs: []string{`INGEST_RATE_LIMIT: want a count per duration like 5/15m, or 0 for none, not "fast"`}},
		{name: "bad INGEST_KEY_RATE_LIMIT", env: with("INGEST_KEY_RATE_LIMIT", "20/week"),
			wantErrs: []string{`INGEST_KEY_RATE_LIMIT: want a count per duration like 5/15m, or 0 for none, not "20/week"`}},
		{name: "zero INGEST_BURST", env: with("INGEST_BURST", "0"),
			wantErrs: []string{`INGEST_BURST must be a whole number from 1 to 1000000, not "0"`}},
		{name: "huge INGEST_BURST", env: with("INGEST_BURST", "1000001"),
			wantErrs: []string{`INGEST_BURST must be a whole number from 1 to 1000000, not "1000001"`}},
		{name: "bad INGEST_KEY_BURST", env: with("INGEST_KEY_BURST", "ten"),
			wantErrs: []string{`INGEST_KEY_BURST must be a whole number from 1 to 1000000, not "ten"`}},
		{name: "TRUSTED_PROXIES", env: with("TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.7 ,::1,10.1.2.3/16"),
			wantAccess: open, wantLimits: defaults, wantProxies: "10.0.0.0/8,192.168.1.7/32,::1/128,10.1.0.0/16"},
		{name: "bad TRUSTED_PROXIES", env: with("TRUSTED_PROXIES", "10.0.0.0/8,10.0.0"),
			wantErrs: []string{`TRUSTED_PROXIES: "10.0.0" is not a CIDR such as 10.0.0.0/8`}},
		{name: "every problem at once", env: with("REGISTRATION", "maybe", "PUBLIC_INGEST", "no", "PUBLIC_READ", "1", "RATE_LIMITS", "disabled",
			"LOGIN_RATE_LIMIT", "5", "LOGIN_IP_RATE_LIMIT", "x", "REGISTER_RATE_LIMIT", "y", "INGEST_RATE_LIMIT", "z", "INGEST_BURST", "0",
			"INGEST_KEY_RATE_LIMIT", "w", "INGEST_KEY_BURST", "-1", "TRUSTED_PROXIES", "proxy", "ALGORITHM", "none"),
			wantErrs: []string{"REGISTRATION must", "PUBLIC_INGEST must", "PUBLIC_READ must", "RATE_LIMITS must", "LOGIN_RATE_LIMIT:",
				"LOGIN_IP_RATE_LIMIT:", "REGISTER_RATE_LIMIT:", "INGEST_RATE_LIMIT:", "INGEST_BURST must", "INGEST_KEY_RATE_LIMIT:",
				"INGEST_KEY_BURST must", "TRUSTED_PROXIES:", "ALGORITHM must"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(func(k string) string { return tt.env[k] }, false)
			if len(tt.wantErrs) > 0 {
				if err == nil {
					t.Fatalf("loadConfig error = nil, want one mentioning %q", tt.wantErrs)
				}
				for _, want := range tt.wantErrs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("loadConfig error = %q, want it to contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig error = %v, want none", err)
			}
			if got := (switches{cfg.registrationOpen, cfg.publicIngest, cfg.publicRead, cfg.rateLimits}); got != tt.wantAccess {
				t.Errorf("registration, public ingest, public read, rate limits = %+v, want %+v", got, tt.wantAccess)
			}
			if cfg.limits != tt.wantLimits {
				t.Errorf("limits = %+v, want %+v", cfg.limits, tt.wantLimits)
			}
			var proxies []string
			for _, p := range cfg.trustedProxies {
				proxies = append(proxies, p.String())
			}
			if got := strings.Join(proxies, ","); got != tt.wantProxies {
				t.Errorf("trustedProxies = %s, want %s", got, tt.wantProxies)
			}
		})
	}
}
