//go:build browser

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests drive the console in Debian's headless Chromium:
//
//	go test -tags browser -run Browser .
//	go test -tags browser -run BrowserScreenshots -screenshots .   # rewrites docs/console-*.png
//	go test -tags browser -run '^$' -bench Console -benchtime 3x .
var writeScreenshots = flag.Bool("screenshots", false, "write the console's screenshots into docs/")

// browser is one headless Chromium; each page is a tab of its own, with
// its own sessionStorage, so two pages are two signed-in people.
type browser struct {
	ctx context.Context // the first tab's, which keeps the browser
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the browser tests need Chromium, and found none: %v\n"+
			"Install it (Debian: apt-get install chromium); .ci/run does.", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // root in CI containers
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil {
		cancelAlloc()
		t.Fatalf("start Chromium (%s): %v", chromium, err)
	}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return &browser{ctx: ctx}
}

// tab is one page of the console. It records console errors, uncaught
// exceptions and CSP violations, and fails the test on any at its end.
type tab struct {
	ctx      context.Context
	mu       sync.Mutex
	problems []string
}

// cspReporter turns a CSP violation into a console error, which the tab
// records; DevTools runs it in every document, whatever the CSP.
const cspReporter = `document.addEventListener("securitypolicyviolation", (e) =>
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber));`

func (b *browser) newTab(t testing.TB) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	tb := &tab{ctx: ctx}
	listen := func(ev any) {
		var problem string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				problem = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
			}
		case *runtime.EventExceptionThrown:
			problem = "uncaught: " + ev.ExceptionDetails.Text
			if e := ev.ExceptionDetails.Exception; e != nil {
				problem += " " + e.Description
			}
		case *cdplog.EventEntryAdded:
			// A response with an error status is the network's message,
			// expected when a test makes one (a 409, a server restart).
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				problem = fmt.Sprintf("%s error: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
		if problem != "" {
			tb.mu.Lock()
			tb.problems = append(tb.problems, problem)
			tb.mu.Unlock()
		}
	}
	err := chromedp.Listen(ctx, listen)
	if err == nil {
		_, err = chromedp.Call(ctx, runtime.Enable, cdp.Empty{})
	}
	if err == nil {
		_, err = chromedp.Call(ctx, cdplog.Enable, cdp.Empty{})
	}
	if err == nil {
		_, err = chromedp.Call(ctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: cspReporter})
	}
	if err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	t.Cleanup(func() {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, p := range tb.problems {
			t.Errorf("the console logged: %s", p)
		}
		cancel()
	})
	return tb
}

// run runs actions in the tab, failing the test on an error.
func (tb *tab) run(t testing.TB, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		dump, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
		t.Fatalf("%s: %v\npage now:\n%s", what, err, dump)
	}
}

// waitJS waits until expr is true in the page, up to within, and
// returns how long that took.
func (tb *tab) waitJS(t testing.TB, what, expr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	tb.run(t, what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(within), chromedp.WithPollingInterval(10*time.Millisecond)))
	return time.Since(start)
}

// eval returns the value of expr in the page.
func evalJS[T any](t testing.TB, tb *tab, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// js runs a script in the page for its effect.
func js(script string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](script)
}

// signIn fills in the console's sign-in form, which the page shows.
func (tb *tab) signIn(t testing.TB, username, password string) {
	t.Helper()
	tb.run(t, "sign in as "+username,
		chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.SetValue(chromedp.CSS("#username"), username),
		chromedp.SetValue(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#signin-form button[type=submit]")),
	)
	tb.waitJS(t, username+" signed in", `document.querySelector("#who").textContent.startsWith(`+jsString(username+" (")+`)`, 10*time.Second)
	tb.waitLive(t)
}

// waitLive waits for the stream indicator to say live.
func (tb *tab) waitLive(t testing.TB) {
	t.Helper()
	tb.waitJS(t, "the stream to be live", `document.querySelector("#live").textContent === "live"`, 10*time.Second)
}

func jsString(s string) string { return fmt.Sprintf("%q", s) }

// rowJS is an expression for the live list's row with this title, or null.
func rowJS(title string) string {
	return `[...document.querySelectorAll("#list li")].find((li) => li.querySelector(".title").textContent === ` + jsString(title) + `)`
}

// TestBrowserConsole drives the console through what the people on call
// do with it, on a server where reading needs signing in, so the stream
// goes through tickets: sign in; a report appears live; filters survive a
// reload; an acknowledgement in one tab shows in another; a 409 is shown;
// a resolved incident is in the history; a viewer gets no buttons; an
// expired token goes back to sign-in, keeping the URL.
func TestBrowserConsole(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.publicRead = false; c.rateLimits = false })
	admin := ts.register(t, "alice", "password1") // the first user is the admin
	for _, u := range []struct{ name, role string }{{"bob", "responder"}, {"vic", "viewer"}} {
		ts.request(t, "POST", "/api/v1/users", fmt.Sprintf(`{"username":%q,"password":"password1","role":%q}`, u.name, u.role),
			bearer(admin)...).mustStatus(t, "create "+u.name, http.StatusCreated)
	}
	b := newBrowser(t)
	alice := b.newTab(t)
	report := func(title, severity string) incident {
		t.Helper()
		var inc incident
		ts.postIncident(t, fmt.Sprintf(`{"title":%q,"severity":%q,"labels":{"env":"prod"}}`, title, severity)).
			mustStatus(t, "report "+title, http.StatusCreated).json(t, &inc)
		return inc
	}
	ts.createIncident(t, "queue backlog", "medium")

	t.Run("sign in", func(t *testing.T) {
		alice.run(t, "open the console", chromedp.Navigate(ts.URL+"/"))
		if got := evalJS[string](t, alice, "location.pathname"); got != "/ui/" {
			t.Errorf("the browser at / is at %s, want /ui/", got)
		}
		alice.signIn(t, "alice", "password1")
		alice.waitJS(t, "the list", rowJS("queue backlog")+` !== undefined`, 5*time.Second)
		if got := evalJS[string](t, alice, `document.querySelector("#who").textContent`); got != "alice (admin)" {
			t.Errorf("the header says %q, want alice (admin)", got)
		}
		if n := evalJS[int](t, alice, `sessionStorage.length`); n != 1 {
			t.Errorf("sessionStorage has %d items, want the token", n)
		}
	})

	var disk incident
	t.Run("a report appears within a second", func(t *testing.T) {
		alice.run(t, "mark the page", js(`window.notReloaded = true`))
		start := time.Now()
		disk = report("disk full on db-1", "critical")
		alice.waitJS(t, "the new incident", rowJS(disk.Title)+` !== undefined`, 5*time.Second)
		took := time.Since(start)
		t.Logf("the reported incident appeared after %v", took)
		if took > time.Second {
			t.Errorf("the reported incident appeared after %v, want within a second", took)
		}
		if !evalJS[bool](t, alice, `window.notReloaded === true && `+rowJS(disk.Title)+`.classList.contains("fresh")`) {
			t.Error("the new incident is not highlighted, or the page reloaded")
		}
		row := evalJS[string](t, alice, rowJS(disk.Title)+`.textContent`)
		for _, want := range []string{"critical", "env=prod", "api", "Acknowledge", "Resolve"} {
			if !strings.Contains(row, want) {
				t.Errorf("the row %q has no %q", row, want)
			}
		}
		counters := evalJS[string](t, alice, `document.querySelector("#counters").textContent`)
		if !strings.Contains(counters, "1 critical") || !strings.Contains(counters, "2 open") {
			t.Errorf("counters = %q, want 1 critical and 2 open", counters)
		}
	})

	t.Run("filters survive a reload", func(t *testing.T) {
		alice.run(t, "filter", chromedp.Click(chromedp.CSS(`#filters input[value="critical"]`)), chromedp.SendKeys(chromedp.CSS("#filter-q"), "disk"))
		alice.waitJS(t, "the filtered list", rowJS("queue backlog")+` === undefined && `+rowJS(disk.Title)+` !== undefined`, 5*time.Second)
		want := "/ui/?severity=critical&q=disk"
		if got := evalJS[string](t, alice, "location.pathname + location.search"); got != want {
			t.Errorf("URL = %s, want %s", got, want)
		}
		alice.run(t, "reload", chromedp.Reload())
		alice.waitLive(t)
		alice.waitJS(t, "the filtered list after the reload", rowJS(disk.Title)+` !== undefined && `+rowJS("queue backlog")+` === undefined`, 5*time.Second)
		if !evalJS[bool](t, alice, `document.querySelector('#filters input[value="critical"]').checked && document.querySelector("#filter-q").value === "disk"`) {
			t.Error("the filter form does not show the URL's filters after the reload")
		}
	})

	bob := b.newTab(t)
	t.Run("an acknowledgement shows in another tab", func(t *testing.T) {
		bob.run(t, "open the console", chromedp.Navigate(ts.URL+"/ui/"))
		bob.signIn(t, "bob", "password1")
		bob.waitJS(t, "the incident", rowJS(disk.Title)+` !== undefined`, 5*time.Second)
		alice.run(t, "acknowledge", js(rowJS(disk.Title)+`.querySelector('button[data-act="acknowledge"]').click()`))
		start := time.Now()
		bob.waitJS(t, "the acknowledgement", rowJS(disk.Title)+`.classList.contains("st-acknowledged")`, 5*time.Second)
		took := time.Since(start)
		t.Logf("the acknowledgement showed in the other tab after %v", took)
		if took > time.Second {
			t.Errorf("the acknowledgement showed in the other tab after %v, want within a second", took)
		}
		if got := evalJS[string](t, bob, rowJS(disk.Title)+`.querySelector(".acker").textContent`); got != "ack alice" {
			t.Errorf("bob's row says %q, want ack alice", got)
		}
	})

	t.Run("a 409 is shown", func(t *testing.T) {
		// Bob selects the incident, which is acknowledged already, and
		// acknowledges: the server refuses, and the console says so.
		bob.run(t, "select and acknowledge",
			js(rowJS(disk.Title)+`.querySelector("input.pick").click()`),
			chromedp.WaitVisible(chromedp.CSS("#bulk")),
			chromedp.Click(chromedp.CSS(`#bulk button[data-bulk="acknowledge"]`)),
		)
		bob.waitJS(t, "the conflict in words", `document.querySelector("#toasts").textContent.includes("(409)")`, 5*time.Second)
		msg := evalJS[string](t, bob, `document.querySelector("#toasts").textContent`)
		if !strings.Contains(msg, "Could not acknowledge #") || !strings.Contains(msg, disk.Title) {
			t.Errorf("the message is %q, want what failed and why", msg)
		}
	})

	t.Run("resolved, then in the history", func(t *testing.T) {
		alice.run(t, "resolve", js(rowJS(disk.Title)+`.querySelector('button[data-act="resolve"]').click()`))
		alice.waitJS(t, "the row to go", rowJS(disk.Title)+` === undefined`, 5*time.Second)
		alice.run(t, "open the history", chromedp.Click(chromedp.CSS("#nav-history")))
		alice.waitJS(t, "the history", `document.querySelector("#history-list").textContent.includes(`+jsString(disk.Title)+`)`, 5*time.Second)
		alice.waitJS(t, "the response times", `document.querySelectorAll("#times tbody tr").length === 5`, 5*time.Second)
		if got := evalJS[string](t, alice, "location.search"); got != "?view=history" {
			t.Errorf("the history's URL is %q, want ?view=history", got)
		}
		// A hand-edited date that is not one sets no bound (and throws
		// nothing, which would fail the test).
		alice.run(t, "open a history with a bad date", chromedp.Navigate(ts.URL+"/ui/?view=history&from=x&to=2026-13-45"))
		alice.waitJS(t, "the history despite it", `document.querySelector("#history-list").textContent.includes(`+jsString(disk.Title)+`)`, 5*time.Second)
	})

	t.Run("a label filter matches own labels only", func(t *testing.T) {
		// "constructor" is on every JavaScript object, but on no incident.
		alice.run(t, "filter by a label no incident has", chromedp.Navigate(ts.URL+"/ui/?label=constructor"))
		alice.waitLive(t)
		alice.waitJS(t, "the list, filtered to nothing", `!document.querySelector("#list-empty").hidden`, 5*time.Second)
		if n := evalJS[int](t, alice, `document.querySelectorAll("#list li").length`); n != 0 {
			t.Errorf("label=constructor lists %d incidents, want none", n)
		}
	})

	t.Run("a viewer sees no action buttons", func(t *testing.T) {
		report("cert expiring", "high")
		vic := b.newTab(t)
		vic.run(t, "open the console", chromedp.Navigate(ts.URL+"/ui/"))
		vic.signIn(t, "vic", "password1")
		vic.waitJS(t, "the list", rowJS("cert expiring")+` !== undefined`, 5*time.Second)
		if n := evalJS[int](t, vic, `document.querySelectorAll("#list button, #list input, #detail button").length`); n != 0 {
			t.Errorf("the viewer's list has %d buttons or boxes, want none", n)
		}
		vic.run(t, "open the incident", js(rowJS("cert expiring")+`.querySelector(".title").click()`))
		vic.waitJS(t, "the detail", `document.querySelector("#detail .timeline") !== null`, 5*time.Second)
		if n := evalJS[int](t, vic, `document.querySelectorAll("#detail button, #detail textarea").length`); n != 0 {
			t.Errorf("the viewer's detail has %d buttons or fields, want none", n)
		}
	})

	t.Run("an expired token returns to sign-in", func(t *testing.T) {
		const at = "/ui/?severity=critical,high&q=cert"
		alice.run(t, "open a filtered view", chromedp.Navigate(ts.URL+at))
		alice.waitLive(t)
		ts.clock.Advance(2 * time.Hour) // tokens last an hour
		alice.run(t, "come back later", chromedp.Reload())
		alice.waitJS(t, "the sign-in", `!document.querySelector("#signin").hidden`, 10*time.Second)
		if got := evalJS[string](t, alice, "location.pathname + location.search"); got != at {
			t.Errorf("at sign-in the URL is %s, want %s", got, at)
		}
		alice.signIn(t, "alice", "password1")
		alice.waitJS(t, "the same filtered view", rowJS("cert expiring")+` !== undefined`, 5*time.Second)
		if got := evalJS[string](t, alice, "location.pathname + location.search"); got != at {
			t.Errorf("after signing in the URL is %s, want %s", got, at)
		}
	})
}

// restartableServer is a server on a fixed address that a test can stop
// and start again on the same database, as an operator restarts one.
type restartableServer struct {
	t    *testing.T
	addr string
	dsn  string
	cfg  config
	stop func()
	srv  *server
}

// start runs a server on rs.addr; beforeListen, if given, runs once the
// server is ready and before it accepts connections, with its handler.
func (rs *restartableServer) start(beforeListen func(http.Handler)) {
	t := rs.t
	t.Helper()
	st, err := openStore(context.Background(), rs.dsn, 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(rs.cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.startBackground(ctx); err != nil {
		t.Fatal(err)
	}
	h := recordStatuses(srv.routes())
	if beforeListen != nil {
		beforeListen(h)
	}
	ln, err := net.Listen("tcp", rs.addr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", rs.addr, err)
	}
	rs.addr = ln.Addr().String()
	hs := &http.Server{Handler: h}
	hs.RegisterOnShutdown(srv.hub.shutdown)
	go hs.Serve(ln)
	var once sync.Once
	rs.srv = srv
	rs.stop = func() {
		once.Do(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			hs.Shutdown(sctx)
			cancel()
			st.Close()
		})
	}
	t.Cleanup(rs.stop)
}

// TestBrowserReconnect restarts the server under an open console: the
// indicator says so, the console reconnects by itself, and an incident
// reported while it was away appears without a reload.
func TestBrowserReconnect(t *testing.T) {
	cfg := testConfig()
	cfg.databaseURL = newTestDSN(t)
	cfg.publicRead = false
	rs := &restartableServer{t: t, addr: "127.0.0.1:0", dsn: cfg.databaseURL, cfg: cfg}
	rs.start(nil)
	base := "http://" + rs.addr
	if resp, err := http.Post(base+"/api/v1/register", "application/json", strings.NewReader(`{"username":"alice","password":"password1"}`)); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %v %v", resp, err)
	}
	if resp, err := http.Post(base+"/api/v1/incidents", "application/json", strings.NewReader(reportBody("before the restart", "high"))); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("report: %v %v", resp, err)
	}

	tb := newBrowser(t).newTab(t)
	tb.run(t, "open the console", chromedp.Navigate(base+"/ui/"))
	tb.signIn(t, "alice", "password1")
	tb.waitJS(t, "the list", rowJS("disk full")+` === undefined && `+rowJS("before the restart")+` !== undefined`, 5*time.Second)
	tb.run(t, "mark the page", js(`window.notReloaded = true`))

	rs.stop()
	tb.waitJS(t, "the indicator to say so", `document.querySelector("#live").textContent === "reconnecting"`, 10*time.Second)
	rs.start(func(h http.Handler) {
		// Reported while no browser can reach the server: the console
		// can only learn of it by resuming the stream.
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/incidents", strings.NewReader(reportBody("while away", "critical"))))
		if rec.Code != http.StatusCreated {
			t.Fatalf("report while away: %d %s", rec.Code, rec.Body)
		}
	})
	tb.waitLive(t)
	tb.waitJS(t, "the incident missed meanwhile", rowJS("while away")+` !== undefined`, 10*time.Second)
	if !evalJS[bool](t, tb, `window.notReloaded === true`) {
		t.Error("the page reloaded")
	}
	if n := evalJS[int](t, tb, `document.querySelectorAll("#list li").length`); n != 2 {
		t.Errorf("the list has %d rows, want 2 (nothing twice)", n)
	}
}

// TestBrowserScreenshots writes docs/console-{1280,375}-{light,dark}.png
// when -screenshots is given.
func TestBrowserScreenshots(t *testing.T) {
	if !*writeScreenshots {
		t.Skip("writes docs/console-*.png only with -screenshots")
	}
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "alice", "password1")
	for _, r := range []string{
		`{"title":"Checkout error rate above 5%","severity":"critical","labels":{"service":"checkout","env":"prod"}}`,
		`{"title":"Disk 91% full on db-1","severity":"high","dedup_key":"db-1/disk","labels":{"host":"db-1"}}`,
		`{"title":"Disk 91% full on db-1","severity":"high","dedup_key":"db-1/disk","labels":{"host":"db-1"}}`,
		`{"title":"Certificate for api.example.com expires in 9 days","severity":"medium","labels":{"team":"platform"}}`,
		`{"title":"Backup job took 2h longer than usual","severity":"low"}`,
		`{"title":"Replica lag over 30 s on db-2","severity":"high","labels":{"host":"db-2","env":"prod"}}`,
	} {
		if got := ts.postIncident(t, r).status; got != http.StatusCreated && got != http.StatusOK {
			t.Fatalf("report %s: status %d", r, got)
		}
	}
	var list []incident
	ts.request(t, "GET", "/api/v1/incidents?severity=high", "").json(t, &list)
	ts.patch(t, list[0].ID, "acknowledge", admin, `{"note":"failing over"}`).mustStatus(t, "acknowledge", http.StatusOK)

	tb := newBrowser(t).newTab(t)
	tb.run(t, "open the console", chromedp.Navigate(ts.URL+"/ui/"), chromedp.Click(chromedp.CSS("#signin-open")))
	tb.signIn(t, "alice", "password1")
	tb.waitJS(t, "the list", `document.querySelectorAll("#list li").length === 5`, 5*time.Second)
	for _, width := range []int64{1280, 375} {
		for _, scheme := range []string{"light", "dark"} {
			tb.run(t, "emulate", chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
				_, err := cdp.Call(ctx, target, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
					Width: width, Height: 760, DeviceScaleFactor: 1, Mobile: width < 600})
				if err == nil {
					_, err = cdp.Call(ctx, target, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
						Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
				}
				return err
			}), chromedp.Sleep(300*time.Millisecond)) // the layout settles
			png, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Join("docs", fmt.Sprintf("console-%d-%s.png", width, scheme))
			if err := os.WriteFile(name, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d bytes)", name, len(png))
		}
	}
}

// BenchmarkConsole1000 measures the console with 1,000 open incidents:
// the time from navigation to the first render of all of them, and the
// time from sending a burst of 100 acknowledgements (8 at a time, over
// REST) to the list showing all 100, next to the time the REST calls
// alone take. Each iteration uses 100 new incidents, so at most 10:
//
//	go test -tags browser -run '^$' -bench Console1000 -benchtime 3x .
func BenchmarkConsole1000(b *testing.B) {
	if b.N > 10 {
		b.Fatalf("-benchtime %dx: at most 10x, each iteration acknowledges 100 of the 1,000 incidents", b.N)
	}
	ts := newTestServer(b, func(c *config) { c.rateLimits = false })
	admin := ts.register(b, "alice", "password1")
	ids := make(chan int64, 1000)
	inPool := func(n int, f func(i int)) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range next {
					f(i)
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	severities := []string{"critical", "high", "medium", "low"}
	inPool(1000, func(i int) {
		r := ts.postIncident(offTestGoroutine{b}, fmt.Sprintf(`{"title":"incident %d","severity":%q,"labels":{"host":"web-%d","env":"prod"}}`, i, severities[i%4], i%50))
		var inc incident
		r.json(offTestGoroutine{b}, &inc)
		ids <- inc.ID
	})
	close(ids)
	var all []int64
	for id := range ids {
		all = append(all, id)
	}
	br := newBrowser(b)
	var render, burst, rest time.Duration
	b.ResetTimer()
	for i := range b.N {
		tb := br.newTab(b)
		ctx, cancel := context.WithTimeout(tb.ctx, time.Minute)
		if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/ui/")); err != nil {
			b.Fatal(err)
		}
		// performance.now() counts from the navigation's start.
		ms, err := chromedp.Run(ctx, chromedp.Poll[float64](`document.querySelectorAll("#list li").length === 1000 && performance.now()`,
			chromedp.WithPollingInterval(5*time.Millisecond)))
		if err != nil {
			b.Fatal(err)
		}
		render += time.Duration(ms * float64(time.Millisecond))
		tb.waitLive(b)

		start := time.Now()
		batch := all[i*100 : (i+1)*100]
		restDone := make(chan time.Duration, 1)
		go func() {
			inPool(100, func(j int) {
				ts.patch(offTestGoroutine{b}, batch[j], "acknowledge", admin, "")
			})
			restDone <- time.Since(start)
		}()
		want := (i + 1) * 100
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelectorAll("#list li.st-acknowledged").length === %d`, want),
			chromedp.WithPollingInterval(5*time.Millisecond))); err != nil {
			b.Fatal(err)
		}
		burst += time.Since(start)
		rest += <-restDone
		cancel()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(render.Milliseconds())/n, "ms/first-render")
	b.ReportMetric(float64(burst.Milliseconds())/n, "ms/burst-of-100")
	b.ReportMetric(float64(rest.Milliseconds())/n, "ms/burst-rest-only")
}
