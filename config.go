package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// config is everything the server reads from its environment, read once at
// start. loadConfig holds every default and every check.
type config struct {
	databaseURL     string
	secretKey       []byte
	algorithm       string
	tokenTTL        time.Duration
	allowedOrigins  []string
	addr            string
	docsSwaggerJS   string
	docsSwaggerCSS  string
	docsRedocJS     string
	dbTimeout       time.Duration
	dbMaxConns      int
	shutdownTimeout time.Duration
	wsPingInterval  time.Duration
	reopenWindow    time.Duration
	publicURL       string // the server's external base URL, without a trailing slash; may be empty
	metricsAddr     string // a second listener for /metrics alone; empty: /metrics is on addr
	metricsToken    string // the bearer token /metrics asks for; empty: none

	registrationOpen   bool
	publicIngest       bool // POST /api/v1/incidents without credentials
	publicRead         bool // reading incidents and the stream without credentials
	rateLimits         bool // RATE_LIMITS=off turns every limit off
	webhookDenyPrivate bool // webhooks may not connect to loopback, private, link-local or metadata addresses
	limits             limitSettings
	trustedProxies     trustedProxies
}

// limitSettings are the rate limits' sizes; a zero one is off.
type limitSettings struct {
	loginUser countLimit // failed logins per username
	loginIP   countLimit // failed logins per client IP
	register  countLimit // registrations per client IP
	ingest    rateLimit  // anonymous reports per client IP
	ingestKey rateLimit  // reports per API key or signed-in user
}

// minSecretKeyBytes is the shortest SECRET_KEY accepted: an HMAC key shorter
// than the hash output weakens it.
const minSecretKeyBytes = 32

// minMetricsTokenBytes is the shortest METRICS_TOKEN accepted.
const minMetricsTokenBytes = 16

// loadConfig reads the configuration through getenv. In dev mode the database
// and the secret may be missing; run fills them in. Every problem is reported
// at once so an operator fixes them in one go.
func loadConfig(getenv func(string) string, dev bool) (config, error) {
	cfg := config{
		databaseURL:     strings.TrimSpace(getenv("DATABASE_URL")),
		secretKey:       []byte(getenv("SECRET_KEY")),
		algorithm:       "HS256",
		tokenTTL:        60 * time.Minute,
		addr:            ":8080",
		docsSwaggerJS:   "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js",
		docsSwaggerCSS:  "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
		docsRedocJS:     "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js",
		dbTimeout:       5 * time.Second,
		dbMaxConns:      defaultDBMaxConns,
		shutdownTimeout: 10 * time.Second,
		wsPingInterval:  30 * time.Second,
		reopenWindow:    5 * time.Minute,

		registrationOpen: true,
		publicIngest:     true,
		publicRead:       true,
		rateLimits:       true,
		limits: limitSettings{
			loginUser: countLimit{n: 5, window: 15 * time.Minute},
			loginIP:   countLimit{n: 20, window: time.Minute},
			register:  countLimit{n: 10, window: time.Hour},
			ingest:    rateLimit{rate: 20, burst: 100},
			ingestKey: rateLimit{rate: 100, burst: 500},
		},
	}
	var problems []string
	if cfg.databaseURL == "" && !dev {
		problems = append(problems, "DATABASE_URL is required (e.g. postgres://user:password@localhost:5432/incidents), or run with -dev")
	} else if cfg.databaseURL != "" && !validDatabaseURL(cfg.databaseURL) {
		problems = append(problems, "DATABASE_URL must be a postgres:// or postgresql:// URL or a libpq key=value string")
	}
	switch {
	case len(cfg.secretKey) == 0 && !dev:
		problems = append(problems, fmt.Sprintf("SECRET_KEY is required: at least %d random bytes, e.g. the output of 'openssl rand -hex 32'", minSecretKeyBytes))
	case len(cfg.secretKey) > 0 && len(cfg.secretKey) < minSecretKeyBytes:
		problems = append(problems, fmt.Sprintf("SECRET_KEY is %d bytes; it must be at least %d (e.g. 'openssl rand -hex 32')", len(cfg.secretKey), minSecretKeyBytes))
	}
	if v := getenv("ALGORITHM"); v != "" {
		switch v {
		case "HS256", "HS384", "HS512":
			cfg.algorithm = v
		default:
			problems = append(problems, fmt.Sprintf("ALGORITHM must be HS256, HS384 or HS512, not %q", v))
		}
	}
	if v := getenv("ACCESS_TOKEN_EXPIRE_MINUTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 60*24*365 {
			problems = append(problems, fmt.Sprintf("ACCESS_TOKEN_EXPIRE_MINUTES must be a whole number of minutes from 1 to 525600, not %q", v))
		} else {
			cfg.tokenTTL = time.Duration(n) * time.Minute
		}
	}
	for _, o := range strings.Split(getenv("ALLOWED_ORIGINS"), ",") {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		if o == "" {
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
			problems = append(problems, fmt.Sprintf("ALLOWED_ORIGINS entry %q is not an origin like https://example.com", o))
			continue
		}
		cfg.allowedOrigins = append(cfg.allowedOrigins, o)
	}
	if v := strings.TrimRight(strings.TrimSpace(getenv("PUBLIC_URL")), "/"); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			problems = append(problems, fmt.Sprintf("PUBLIC_URL must be an absolute http or https URL like https://incidents.example.com, not %q", v))
		} else {
			cfg.publicURL = v
		}
	}
	if v := getenv("ADDR"); v != "" {
		cfg.addr = v
	} else if p := getenv("PORT"); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			problems = append(problems, fmt.Sprintf("PORT must be a port number, not %q", p))
		} else {
			cfg.addr = ":" + p
		}
	}
	if v := strings.TrimSpace(getenv("METRICS_ADDR")); v != "" {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			problems = append(problems, fmt.Sprintf("METRICS_ADDR must be host:port or :port, such as 127.0.0.1:9090, not %q", v))
		} else {
			cfg.metricsAddr = v
		}
	}
	// The token is never quoted back: it is a secret.
	if v := getenv("METRICS_TOKEN"); v != "" {
		if len(v) < minMetricsTokenBytes || strings.TrimSpace(v) != v {
			problems = append(problems, fmt.Sprintf("METRICS_TOKEN must be at least %d characters without surrounding spaces (e.g. 'openssl rand -hex 32')", minMetricsTokenBytes))
		} else {
			cfg.metricsToken = v
		}
	}
	if v := getenv("WS_PING_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > time.Hour {
			problems = append(problems, fmt.Sprintf("WS_PING_INTERVAL must be a duration from 1s to 1h, such as 30s, not %q", v))
		} else {
			cfg.wsPingInterval = d
		}
	}
	if v := getenv("DB_MAX_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			problems = append(problems, fmt.Sprintf("DB_MAX_CONNS must be a whole number from 1 to 1000, not %q", v))
		} else {
			cfg.dbMaxConns = n
		}
	}
	if v := getenv("REOPEN_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if v == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			problems = append(problems, fmt.Sprintf("REOPEN_WINDOW must be a duration such as 5m, or 0 to never reopen, not %q", v))
		} else {
			cfg.reopenWindow = d
		}
	}
	problems = loadAccessConfig(getenv, &cfg, problems)
	for name, dst := range map[string]*string{"DOCS_SWAGGER_JS": &cfg.docsSwaggerJS, "DOCS_SWAGGER_CSS": &cfg.docsSwaggerCSS, "DOCS_REDOC_JS": &cfg.docsRedocJS} {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	if len(problems) > 0 {
		return config{}, errors.New("invalid configuration:\n  - " + strings.Join(problems, "\n  - "))
	}
	return cfg, nil
}

// loadAccessConfig reads who may do what without credentials and the rate
// limits.
func loadAccessConfig(getenv func(string) string, cfg *config, problems []string) []string {
	choice := func(name string, dst *bool, yes, no string) {
		raw := getenv(name)
		switch strings.ToLower(strings.TrimSpace(raw)) {
		case "":
		case yes:
			*dst = true
		case no:
			*dst = false
		default:
			problems = append(problems, fmt.Sprintf("%s must be %s or %s, not %q", name, yes, no, raw))
		}
	}
	choice("REGISTRATION", &cfg.registrationOpen, "open", "closed")
	choice("PUBLIC_INGEST", &cfg.publicIngest, "true", "false")
	choice("PUBLIC_READ", &cfg.publicRead, "true", "false")
	choice("RATE_LIMITS", &cfg.rateLimits, "on", "off")
	choice("WEBHOOK_DENY_PRIVATE", &cfg.webhookDenyPrivate, "true", "false")
	for name, dst := range map[string]*countLimit{"LOGIN_RATE_LIMIT": &cfg.limits.loginUser, "LOGIN_IP_RATE_LIMIT": &cfg.limits.loginIP, "REGISTER_RATE_LIMIT": &cfg.limits.register} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			cl, err := parseCountLimit(v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v, not %q", name, err, v))
			}
			*dst = cl
		}
	}
	for prefix, dst := range map[string]*rateLimit{"INGEST": &cfg.limits.ingest, "INGEST_KEY": &cfg.limits.ingestKey} {
		if v := strings.TrimSpace(getenv(prefix + "_RATE_LIMIT")); v != "" {
			rate, err := parseRate(v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s_RATE_LIMIT: %v, not %q", prefix, err, v))
			}
			dst.rate = rate
		}
		if v := strings.TrimSpace(getenv(prefix + "_BURST")); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1_000_000 {
				problems = append(problems, fmt.Sprintf("%s_BURST must be a whole number from 1 to 1000000, not %q", prefix, v))
			}
			dst.burst = n
		}
	}
	tp, err := parseTrustedProxies(getenv("TRUSTED_PROXIES"))
	if err != nil {
		problems = append(problems, "TRUSTED_PROXIES: "+err.Error())
	}
	cfg.trustedProxies = tp
	return problems
}

// validDatabaseURL accepts what lib/pq accepts: a URL with either scheme, or
// a key=value connection string.
func validDatabaseURL(s string) bool {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		_, err := url.Parse(s)
		return err == nil
	}
	return strings.Contains(s, "=")
}

// parseDotEnv reads KEY=VALUE lines, # comments, blank lines, an optional
// "export " prefix and optional single or double quotes around the value,
// which a comment may follow.
func parseDotEnv(r io.Reader) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf(".env line %d: want KEY=VALUE", n)
		}
		value = strings.TrimSpace(value)
		if value != "" && (value[0] == '"' || value[0] == '\'') {
			end := strings.IndexByte(value[1:], value[0]) + 1
			if rest := strings.TrimSpace(value[end+1:]); end == 0 || rest != "" && !strings.HasPrefix(rest, "#") {
				return nil, fmt.Errorf(".env line %d: a quoted value ends with its quote (and maybe a # comment)", n)
			}
			value = value[1:end]
		} else if i := strings.Index(value, " #"); i >= 0 {
			value = strings.TrimSpace(value[:i])
		}
		vars[key] = value
	}
	return vars, sc.Err()
}

// withDotEnv returns a getenv that falls back to the .env values: the real
// environment wins.
func withDotEnv(getenv func(string) string, dotenv map[string]string) func(string) string {
	return func(key string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return dotenv[key]
	}
}
