package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	secret := strings.Repeat("s", 32)
	base := map[string]string{"DATABASE_URL": "postgres://u:p@localhost/incidents", "SECRET_KEY": secret}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	for _, tt := range []struct {
		name     string
		env      map[string]string
		dev      bool
		wantErrs []string // substrings the one error message must contain
		check    func(t *testing.T, cfg config)
	}{
		{name: "defaults", env: base, check: func(t *testing.T, cfg config) {
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
		{name: "postgresql scheme", env: with("DATABASE_URL", "postgresql://u@h/db")},
		{name: "key=value DSN", env: with("DATABASE_URL", "host=/run/postgresql dbname=incidents")},
		{name: "bad DSN", env: with("DATABASE_URL", "mysql://u@h/db"), wantErrs: []string{"DATABASE_URL must be"}},
		{name: "origins", env: with("ALLOWED_ORIGINS", " https://a.example , http://b.example:8080/ ,"), check: func(t *testing.T, cfg config) {
			want := []string{"https://a.example", "http://b.example:8080"}
			if strings.Join(cfg.allowedOrigins, " ") != strings.Join(want, " ") {
				t.Errorf("allowedOrigins = %q, want %q", cfg.allowedOrigins, want)
			}
		}},
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
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
	if len(vars) != len(want) {
		t.Errorf("got %d variables, want %d: %v", len(vars), len(want), vars)
	}
	if _, err := parseDotEnv(strings.NewReader("NOT A PAIR\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("parseDotEnv(bad line) error = %v, want one naming line 1", err)
	}

	getenv := withDotEnv(func(k string) string { return map[string]string{"ALGORITHM": "HS512"}[k] }, vars)
	if got := getenv("ALGORITHM"); got != "HS512" {
		t.Errorf("ALGORITHM = %q, want the real environment's HS512", got)
	}
	if got := getenv("ADDR"); got != ":9000" {
		t.Errorf("ADDR = %q, want .env's :9000", got)
	}
}
