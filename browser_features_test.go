//go:build browser

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// These browser tests cover what the console does beyond the list: the
// keyboard, signing out, notes, the heartbeats panel, the webhook
// banners and the timeline's escalation and heartbeat events.

// newConsoleServer starts a server where reading needs signing in, with
// alice, its admin, and the other users named in roles (name: role); it
// returns the server and alice's token.
func newConsoleServer(t *testing.T, roles map[string]string) (*testServer, string) {
	t.Helper()
	ts := newTestServer(t, func(c *config) { c.publicRead = false; c.rateLimits = false })
	admin := ts.register(t, "alice", "password1") // the first user is the admin
	for name, role := range roles {
		ts.request(t, "POST", "/api/v1/users", fmt.Sprintf(`{"username":%q,"password":"password1","role":%q}`, name, role),
			bearer(admin)...).mustStatus(t, "create "+name, http.StatusCreated)
	}
	return ts, admin
}

// openAs opens the console in a new tab and signs in.
func (b *browser) openAs(t *testing.T, ts *testServer, username string) *tab {
	t.Helper()
	tb := b.newTab(t)
	tb.run(t, "open the console", chromedp.Navigate(ts.URL+"/ui/"))
	tb.signIn(t, username, "password1")
	return tb
}

// press types keys as real key events into whatever has the focus. A
// printable key's keyDown carries its text, as Chromium's own keyboard
// sends it, so a page that prevents a keydown's default also keeps the
// character from being typed (chromedp.KeyEvent types it in a separate
// char event, which a real keyboard does not).
func (tb *tab) press(t testing.TB, keys string) {
	t.Helper()
	tb.run(t, fmt.Sprintf("press %q", keys), chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
		for _, r := range keys {
			events := kb.Encode(r)
			down, up := *events[0], *events[len(events)-1]
			if len(events) == 3 { // printable: its text goes with the keyDown
				down.Text, down.UnmodifiedText = events[1].Text, events[1].UnmodifiedText
			} else {
				down.Type = input.DispatchKeyEventTypeRawKeyDown
			}
			for _, ev := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, target, input.DispatchKeyEvent, ev); err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

// incidentAs reads an incident through the REST API with token.
func (ts *testServer) incidentAs(t *testing.T, token string, id int64) incident {
	t.Helper()
	var inc incident
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d", id), "", bearer(token)...).
		mustStatus(t, "get incident", http.StatusOK).json(t, &inc)
	return inc
}

// waitStatus waits until the REST API says the incident has status.
func (ts *testServer) waitStatus(t *testing.T, token string, id int64, status string) incident {
	t.Helper()
	var inc incident
	waitFor(t, fmt.Sprintf("incident %d to be %s", id, status), func() bool {
		inc = ts.incidentAs(t, token, id)
		return inc.Status == status
	})
	return inc
}

// eventsAs reads an incident's timeline through the REST API with token.
func (ts *testServer) eventsAs(t *testing.T, token string, id int64) []eventView {
	t.Helper()
	var events []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", id), "", bearer(token)...).
		mustStatus(t, "timeline", http.StatusOK).json(t, &events)
	return events
}

// currentJS is the title of the row the keyboard is on, or "".
const currentJS = `(document.querySelector("#list li.current .title") || {}).textContent || ""`

// focusedJS describes the element with the focus: its id, or its tag and
// the incident it belongs to.
const focusedJS = `(() => { const e = document.activeElement;
  return e.id || e.tagName.toLowerCase() + (e.dataset.id ? "#" + e.dataset.id : ""); })()`

// TestBrowserKeyboard works the console with the keyboard alone: j and k
// move through the list, a acknowledges, r resolves, / filters, Enter
// opens the incident and Esc closes it, ? shows the help and Esc closes
// that too. Every key is a real key event; the outcome is read from the
// REST API and from the page.
func TestBrowserKeyboard(t *testing.T) {
	ts, admin := newConsoleServer(t, nil)
	crit := ts.createIncident(t, "checkout down", "critical")
	high := ts.createIncident(t, "replica lag", "high")
	low := ts.createIncident(t, "backup slow", "low")
	alice := newBrowser(t).openAs(t, ts, "alice")
	alice.waitJS(t, "the list", `document.querySelectorAll("#list li").length === 3`, 5*time.Second)

	t.Run("j and k move the selection", func(t *testing.T) {
		for _, step := range []struct{ key, want string }{
			{"j", crit.Title}, // the first row
			{"j", high.Title},
			{"j", low.Title},
			{"j", low.Title}, // the last row stays
			{"k", high.Title},
		} {
			alice.press(t, step.key)
			alice.waitJS(t, "the selection on "+step.want, currentJS+` === `+jsString(step.want), 5*time.Second)
		}
		if got, want := evalJS[string](t, alice, focusedJS), fmt.Sprintf("li#%d", high.ID); got != want {
			t.Errorf("the focus is on %s, want the current row %s", got, want)
		}
		if n := evalJS[int](t, alice, `document.querySelectorAll("#list li.current").length`); n != 1 {
			t.Errorf("%d rows are current, want 1", n)
		}
	})

	t.Run("a acknowledges", func(t *testing.T) {
		alice.press(t, "a")
		if got := ts.waitStatus(t, admin, high.ID, "acknowledged"); got.AcknowledgedBy == nil || *got.AcknowledgedBy != "alice" {
			t.Errorf("acknowledged by %v, want alice", got.AcknowledgedBy)
		}
		alice.waitJS(t, "the row acknowledged", rowJS(high.Title)+`.classList.contains("st-acknowledged")`, 5*time.Second)
		if got := evalJS[string](t, alice, currentJS); got != high.Title {
			t.Errorf("after acknowledging the selection is on %q, want it to stay on %q", got, high.Title)
		}
		for _, inc := range []incident{crit, low} {
			if got := ts.incidentAs(t, admin, inc.ID).Status; got != "open" {
				t.Errorf("%q is %s, want only the selected incident acknowledged", inc.Title, got)
			}
		}
	})

	t.Run("r resolves", func(t *testing.T) {
		alice.press(t, "r")
		ts.waitStatus(t, admin, high.ID, "resolved")
		alice.waitJS(t, "the row to go", rowJS(high.Title)+` === undefined`, 5*time.Second)
		alice.press(t, "j") // the selection is gone with its row: j starts again at the top
		alice.waitJS(t, "the selection back on the first row", currentJS+` === `+jsString(crit.Title), 5*time.Second)
	})

	t.Run("slash focuses the filter", func(t *testing.T) {
		alice.press(t, "/")
		alice.waitJS(t, "the filter focused", `document.activeElement.id === "filter-q"`, 5*time.Second)
		alice.press(t, "backup")
		alice.waitJS(t, "the filtered list", `document.querySelectorAll("#list li").length === 1 && `+rowJS(low.Title)+` !== undefined`, 5*time.Second)
		if got := evalJS[string](t, alice, `document.querySelector("#filter-q").value`); got != "backup" {
			t.Errorf("the filter says %q, want backup (without the slash)", got)
		}
		if got := evalJS[string](t, alice, "location.search"); got != "?q=backup" {
			t.Errorf("the URL's query is %q, want ?q=backup", got)
		}
		alice.press(t, kb.Escape)
		alice.waitJS(t, "the filter to let go of the focus", `document.activeElement === document.body`, 5*time.Second)
		if got := ts.incidentAs(t, admin, low.ID).Status; got != "open" {
			t.Errorf("typing the filter changed %q to %s", low.Title, got)
		}
	})

	t.Run("Enter opens the incident, Esc closes it", func(t *testing.T) {
		alice.press(t, "j")
		alice.waitJS(t, "the selection on the one row", currentJS+` === `+jsString(low.Title), 5*time.Second)
		alice.press(t, kb.Enter)
		alice.waitJS(t, "the detail", `!document.querySelector("#view-detail").hidden && document.querySelector("#detail h2") !== null`, 5*time.Second)
		if got, want := evalJS[string](t, alice, "location.search"), fmt.Sprintf("?incident=%d", low.ID); got != want {
			t.Errorf("the detail's URL is %q, want %q", got, want)
		}
		if got := evalJS[string](t, alice, `document.querySelector("#detail h2").textContent`); !strings.Contains(got, low.Title) {
			t.Errorf("the detail's heading is %q, want the incident's title", got)
		}
		// a in the detail acknowledges the incident shown.
		alice.press(t, "a")
		ts.waitStatus(t, admin, low.ID, "acknowledged")
		alice.waitJS(t, "the detail to say so", `document.querySelector("#detail .fields").textContent.includes("acknowledged")`, 5*time.Second)

		alice.press(t, kb.Escape)
		alice.waitJS(t, "the live list again", `!document.querySelector("#view-live").hidden && document.querySelector("#view-detail").hidden`, 5*time.Second)
		if got := evalJS[string](t, alice, "location.search"); got != "?q=backup" {
			t.Errorf("after Esc the URL's query is %q, want the list as it was filtered, ?q=backup", got)
		}
	})

	t.Run("? shows the help, Esc closes it", func(t *testing.T) {
		alice.press(t, "?")
		alice.waitJS(t, "the help", `document.querySelector("#help").open`, 5*time.Second)
		if got := evalJS[string](t, alice, `document.querySelector("#help").textContent`); !strings.Contains(got, "acknowledge") || !strings.Contains(got, "resolve") {
			t.Errorf("the help says %q, want the keys", got)
		}
		alice.press(t, "h") // keys do nothing behind the help: h would open the history
		if got := evalJS[string](t, alice, "location.search"); got != "?q=backup" {
			t.Errorf("h behind the help went to %q", got)
		}
		alice.press(t, kb.Escape)
		alice.waitJS(t, "the help to close", `!document.querySelector("#help").open`, 5*time.Second)
		if !evalJS[bool](t, alice, `document.querySelector("#view-detail").hidden && !document.querySelector("#view-live").hidden`) {
			t.Error("closing the help changed the view")
		}
	})
}

// TestBrowserSignOut signs out: the token leaves sessionStorage, the
// sign-in form shows, and a reload stays signed out.
func TestBrowserSignOut(t *testing.T) {
	ts, _ := newConsoleServer(t, nil)
	ts.createIncident(t, "queue backlog", "medium")
	alice := newBrowser(t).openAs(t, ts, "alice")
	alice.waitJS(t, "the list", rowJS("queue backlog")+` !== undefined`, 5*time.Second)
	if !evalJS[bool](t, alice, `sessionStorage.getItem("incidents.token") !== null`) {
		t.Fatal("signed in, sessionStorage has no token")
	}

	signedOut := func(t *testing.T, when string) {
		t.Helper()
		alice.waitJS(t, "the sign-in form "+when, `!document.querySelector("#signin").hidden && document.querySelector("#main").hidden`, 10*time.Second)
		if n := evalJS[int](t, alice, `sessionStorage.length`); n != 0 {
			t.Errorf("%s sessionStorage has %d items, want none", when, n)
		}
		if got := evalJS[string](t, alice, `document.querySelector("#who").textContent`); got != "" {
			t.Errorf("%s the header says %q, want no one", when, got)
		}
		if !evalJS[bool](t, alice, `document.querySelector("#signout").hidden`) {
			t.Errorf("%s the Sign out button shows", when)
		}
		if got := evalJS[string](t, alice, `document.querySelector("#live").textContent`); got != "offline" {
			t.Errorf("%s the stream indicator says %q, want offline", when, got)
		}
		if n := evalJS[int](t, alice, `document.querySelectorAll("#list li").length`); n != 0 {
			t.Errorf("%s the page keeps %d incidents", when, n)
		}
	}
	alice.run(t, "sign out", chromedp.Click(chromedp.CSS("#signout")))
	signedOut(t, "after signing out")
	if got := evalJS[string](t, alice, `document.activeElement.id`); got != "username" {
		t.Errorf("after signing out the focus is on %q, want the username", got)
	}
	alice.run(t, "reload", chromedp.Reload())
	signedOut(t, "after a reload")

	alice.signIn(t, "alice", "password1")
	alice.waitJS(t, "the list again", rowJS("queue backlog")+` !== undefined`, 5*time.Second)
}

// notesJS is the text of the detail's notes, one a line.
const notesJS = `[...document.querySelectorAll("#detail .notes li")].map((li) => li.textContent).join("\n")`

// timelineJS is the text of the detail's timeline, one event a line.
const timelineJS = `[...document.querySelectorAll("#detail .timeline > li")].map((li) => li.textContent).join("\n")`

// TestBrowserNotes adds a note in the detail view: it shows in the
// detail's notes and timeline without a reload, in this tab and in
// another one on the same incident, and the API lists it.
func TestBrowserNotes(t *testing.T) {
	ts, admin := newConsoleServer(t, map[string]string{"bob": "responder"})
	inc := ts.createIncident(t, "disk full on db-1", "high")
	b := newBrowser(t)
	alice := b.openAs(t, ts, "alice")
	bob := b.openAs(t, ts, "bob")
	detail := ts.URL + fmt.Sprintf("/ui/?incident=%d", inc.ID)
	for _, tb := range []*tab{alice, bob} {
		tb.run(t, "open the incident", chromedp.Navigate(detail))
		tb.waitLive(t)
		tb.waitJS(t, "the timeline", `document.querySelectorAll("#detail .timeline > li").length === 1`, 5*time.Second)
		tb.run(t, "mark the page", js(`window.notReloaded = true`))
	}

	// Bob starts a note of his own meanwhile: the change must not eat it.
	bob.run(t, "start a note", chromedp.SendKeys(chromedp.CSS("#detail-note"), "half-typed"))
	const body = "rotated the logs; 40% free"
	alice.run(t, "write a note", chromedp.SendKeys(chromedp.CSS("#detail-note"), body))
	alice.run(t, "add it", js(`[...document.querySelectorAll("#detail button")].find((b) => b.textContent === "Add note").click()`))
	for who, tb := range map[string]*tab{"alice": alice, "bob": bob} {
		tb.waitJS(t, who+" sees the note", `document.querySelector("#detail .notes") !== null && `+
			`document.querySelector("#detail .notes").textContent.includes(`+jsString(body)+`)`, 5*time.Second)
		tb.waitJS(t, who+" sees it in the timeline", `document.querySelector("#detail .timeline").textContent.includes(`+jsString(body)+`)`, 5*time.Second)
		if !evalJS[bool](t, tb, `window.notReloaded === true`) {
			t.Errorf("%s's page reloaded", who)
		}
		if got := evalJS[string](t, tb, notesJS); !strings.Contains(got, "alice") {
			t.Errorf("%s's notes say %q, want the author", who, got)
		}
		timeline := strings.Split(evalJS[string](t, tb, timelineJS), "\n")
		if len(timeline) != 2 || !strings.Contains(timeline[1], "noted by alice") {
			t.Errorf("%s's timeline is %q, want the report and the note by alice", who, timeline)
		}
	}
	if got := evalJS[string](t, alice, `document.querySelector("#detail-note").value`); got != "" {
		t.Errorf("after adding the note the field still says %q", got)
	}
	if got := evalJS[string](t, bob, `document.querySelector("#detail-note").value`); got != "half-typed" {
		t.Errorf("bob's unfinished note is %q after alice's, want it kept", got)
	}

	var notes []note
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID), "", bearer(admin)...).
		mustStatus(t, "list notes", http.StatusOK).json(t, &notes)
	if len(notes) != 1 || notes[0].Body != body || notes[0].Author == nil || *notes[0].Author != "alice" {
		t.Errorf("GET notes = %+v, want alice's note", notes)
	}

	// A blank note is not sent.
	alice.run(t, "add a blank note", chromedp.SendKeys(chromedp.CSS("#detail-note"), "   "),
		js(`[...document.querySelectorAll("#detail button")].find((b) => b.textContent === "Add note").click()`))
	alice.waitJS(t, "the field to take the focus", `document.activeElement.id === "detail-note"`, 5*time.Second)
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID), "", bearer(admin)...).json(t, &notes)
	if len(notes) != 1 {
		t.Errorf("after a blank note the API lists %d notes, want 1", len(notes))
	}
}

// heartbeatPanelJS is the heartbeat panel's row for name, or undefined.
func heartbeatPanelJS(name string) string {
	return `[...document.querySelectorAll("#heartbeat-list li")].find((li) => li.textContent.includes(` + jsString(name) + `))`
}

// TestBrowserHeartbeats shows a heartbeat in the panel with its state
// and next deadline; when it goes down, and up again, the panel follows
// by itself, and after a reload.
func TestBrowserHeartbeats(t *testing.T) {
	ts, admin := newConsoleServer(t, nil)
	hb := ts.createHeartbeat(t, admin, `{"name":"nightly backup","interval":60,"grace":30,"severity":"high"}`)
	ts.request(t, "POST", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	var up heartbeat
	ts.request(t, "GET", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), "", bearer(admin)...).mustStatus(t, "get", http.StatusOK).json(t, &up)
	if up.State != "up" || up.Deadline == nil {
		t.Fatalf("after a ping the heartbeat is %+v, want up with a deadline", up)
	}

	alice := newBrowser(t).openAs(t, ts, "alice")
	row := heartbeatPanelJS("nightly backup")
	alice.waitJS(t, "the panel", `!document.querySelector("#heartbeats").hidden && `+row+` !== undefined`, 5*time.Second)
	// The deadline as the console writes times, in the browser's zone.
	due := evalJS[string](t, alice, fmt.Sprintf(`new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"}).format(new Date(%q))`,
		up.Deadline.Format(time.RFC3339Nano)))
	if got, want := evalJS[string](t, alice, row+`.textContent`), "up nightly backup · due "+due; got != want {
		t.Errorf("the panel says %q, want %q", got, want)
	}
	if !evalJS[bool](t, alice, row+`.classList.contains("hb-up")`) {
		t.Error("the heartbeat's row is not marked up")
	}

	alice.run(t, "mark the page", js(`window.notReloaded = true`))
	ts.clock.Advance(91 * time.Second) // past interval and grace
	if _, err := ts.st.OverdueHeartbeats(context.Background(), ts.srv.cfg.reopenWindow, ts.clock.Now()); err != nil {
		t.Fatal(err)
	}
	alice.waitJS(t, "the incident it opened", rowJS("nightly backup missed its heartbeat")+` !== undefined`, 5*time.Second)
	alice.waitJS(t, "the panel to say down", row+`.classList.contains("hb-down")`, 5*time.Second)
	if got := evalJS[string](t, alice, row+`.textContent`); got != "down nightly backup" {
		t.Errorf("the panel says %q, want down and no deadline", got)
	}
	if !evalJS[bool](t, alice, `window.notReloaded === true`) {
		t.Error("the page reloaded")
	}

	alice.run(t, "reload", chromedp.Reload())
	alice.waitLive(t)
	alice.waitJS(t, "the panel after a reload", row+` !== undefined && `+row+`.textContent === "down nightly backup"`, 5*time.Second)

	ts.request(t, "POST", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	alice.waitJS(t, "the panel to say up again", row+`.classList.contains("hb-up") && `+row+`.textContent.startsWith("up nightly backup · due ")`, 5*time.Second)
	alice.waitJS(t, "the incident resolved", rowJS("nightly backup missed its heartbeat")+` === undefined`, 5*time.Second)
}

// bannersJS is the text of the banners, one a line.
const bannersJS = `[...document.querySelectorAll("#banners .banner")].map((b) => b.textContent).join("\n")`

// TestBrowserWebhookBanners shows an admin a banner for each webhook that
// is disabled (by an admin, or by the server after a 410) or failing, a
// responder none, and no one once the admin has signed out.
func TestBrowserWebhookBanners(t *testing.T) {
	ts, admin := newConsoleServer(t, map[string]string{"bob": "responder"})
	ok, failing, gone, off := newReceiver(t), newReceiver(t), newReceiver(t), newReceiver(t)
	failing.setMode("fail")
	gone.setMode("gone")
	ts.createWebhook(t, admin, ok, `{"name":"chat"}`)
	ts.createWebhook(t, admin, failing, `{"name":"pager"}`)
	whGone := ts.createWebhook(t, admin, gone, `{"name":"old ticketing"}`)
	whOff := ts.createWebhook(t, admin, off, `{"name":"staging"}`)
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/webhooks/%d", whOff.ID), `{"enabled":false}`, bearer(admin)...).mustStatus(t, "disable", http.StatusOK)

	b := newBrowser(t)
	alice := b.openAs(t, ts, "alice")
	alice.waitJS(t, "the banner for the disabled webhook", `document.querySelectorAll("#banners .banner").length === 1`, 5*time.Second)
	if got, want := evalJS[string](t, alice, bannersJS), "Webhook “staging” is disabled."; got != want {
		t.Errorf("the banners say %q, want %q", got, want)
	}

	ts.createIncident(t, "disk full", "high")
	ts.deliverUntil(t, "an attempt to each", func() bool {
		a, _ := ok.counts()
		b, _ := failing.counts()
		c, _ := gone.counts()
		return a == 1 && b == 1 && c == 1
	})
	waitFor(t, "the 410 to disable the webhook", func() bool {
		var wh webhook
		ts.request(t, "GET", fmt.Sprintf("/api/v1/webhooks/%d", whGone.ID), "", bearer(admin)...).json(t, &wh)
		return !wh.Enabled
	})
	alice.run(t, "reload", chromedp.Reload())
	alice.waitLive(t)
	alice.waitJS(t, "three banners", `document.querySelectorAll("#banners .banner").length === 3`, 5*time.Second)
	banners := evalJS[string](t, alice, bannersJS)
	for _, want := range []string{
		"Webhook “staging” is disabled.",
		"Webhook “old ticketing” is disabled: ",
		"Webhook “pager” is failing: its deliveries have been held up since ",
	} {
		if !strings.Contains(banners, want) {
			t.Errorf("the banners say %q, want %q", banners, want)
		}
	}
	if !strings.Contains(banners, "410") {
		t.Errorf("the banners say %q, want the 410 that disabled old ticketing", banners)
	}
	if strings.Contains(banners, "chat") {
		t.Errorf("the banners say %q, which names the webhook that works", banners)
	}

	bob := b.openAs(t, ts, "bob")
	bob.waitJS(t, "the list", rowJS("disk full")+` !== undefined`, 5*time.Second)
	if n := evalJS[int](t, bob, `document.querySelector("#banners").children.length`); n != 0 {
		t.Errorf("the responder sees %d banners, want none", n)
	}

	// What the admin saw goes with the admin.
	alice.run(t, "sign out", chromedp.Click(chromedp.CSS("#signout")))
	alice.waitJS(t, "the sign-in form", `!document.querySelector("#signin").hidden`, 5*time.Second)
	if got := evalJS[string](t, alice, bannersJS); got != "" {
		t.Errorf("signed out, the page still says %q", got)
	}
}

// TestBrowserTimelineEvents shows escalated and heartbeat events in the
// detail's timeline, with the policy and step, or the heartbeat, named:
// live while the detail is open, and after a reload.
func TestBrowserTimelineEvents(t *testing.T) {
	ts, admin := newConsoleServer(t, nil)
	wh := ts.createWebhook(t, admin, newReceiver(t), `{"name":"pager"}`)
	create[escalationPolicy](t, ts, admin, "/api/v1/escalation-policies", fmt.Sprintf(
		`{"name":"db on-call","match":{"min_severity":"high","labels":{"team":"db"}},"steps":[{"after":"5m","webhooks":[%d]},{"after":"10m","webhooks":[%d]}]}`, wh.ID, wh.ID))
	var inc incident
	ts.postIncident(t, `{"title":"replica lag","severity":"high","labels":{"team":"db"}}`).mustStatus(t, "report", http.StatusCreated).json(t, &inc)
	hb := ts.createHeartbeat(t, admin, `{"name":"nightly backup","interval":60,"grace":0,"severity":"medium"}`)
	ts.request(t, "POST", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)

	alice := newBrowser(t).openAs(t, ts, "alice")
	open := func(t *testing.T, id int64, events int) {
		t.Helper()
		alice.run(t, "open the incident", chromedp.Navigate(ts.URL+fmt.Sprintf("/ui/?incident=%d", id)))
		alice.waitLive(t)
		alice.waitJS(t, "the timeline", fmt.Sprintf(`document.querySelectorAll("#detail .timeline > li").length === %d`, events), 5*time.Second)
		alice.run(t, "mark the page", js(`window.notReloaded = true`))
	}
	// event waits for the timeline's n-th event (from 1) to say want.
	event := func(t *testing.T, n int, want string) {
		t.Helper()
		alice.waitJS(t, "event "+want, fmt.Sprintf(`document.querySelectorAll("#detail .timeline > li").length >= %d`, n), 5*time.Second)
		got := evalJS[string](t, alice, fmt.Sprintf(`document.querySelectorAll("#detail .timeline > li")[%d].textContent`, n-1))
		if !strings.Contains(got, want) {
			t.Errorf("timeline event %d says %q, want %q", n, got, want)
		}
	}

	t.Run("escalated", func(t *testing.T) {
		open(t, inc.ID, 1)
		for _, step := range []struct {
			advance time.Duration
			want    string
		}{
			{5 * time.Minute, "escalated by system (db on-call, step 1)"},
			{5 * time.Minute, "escalated by system (db on-call, step 2)"},
		} {
			ts.clock.Advance(step.advance)
			ts.escalate(t)
			event(t, len(ts.eventsAs(t, admin, inc.ID)), step.want)
		}
		if !evalJS[bool](t, alice, `window.notReloaded === true`) {
			t.Error("the page reloaded")
		}
		open(t, inc.ID, 3)
		event(t, 2, "escalated by system (db on-call, step 1)")
		event(t, 3, "escalated by system (db on-call, step 2)")
	})

	t.Run("heartbeat down and up", func(t *testing.T) {
		ts.clock.Advance(2 * time.Minute)
		if _, err := ts.st.OverdueHeartbeats(context.Background(), ts.srv.cfg.reopenWindow, ts.clock.Now()); err != nil {
			t.Fatal(err)
		}
		var list []incident
		ts.request(t, "GET", "/api/v1/incidents?dedup_key="+url.QueryEscape(hb.key()), "", bearer(admin)...).
			mustStatus(t, "list", http.StatusOK).json(t, &list)
		if len(list) != 1 {
			t.Fatalf("%d incidents for the heartbeat, want 1", len(list))
		}
		open(t, list[0].ID, 2)
		event(t, 2, "heartbeat_down by system (heartbeat nightly backup)")
		ts.request(t, "POST", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
		event(t, 4, "heartbeat_up by system (heartbeat nightly backup)")
		event(t, 3, "resolved")
		if !evalJS[bool](t, alice, `window.notReloaded === true`) {
			t.Error("the page reloaded")
		}
		open(t, list[0].ID, 4)
		event(t, 4, "heartbeat_up by system (heartbeat nightly backup)")
	})
}
