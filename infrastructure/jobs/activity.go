package jobs

import (
	"fmt"
	"regexp"
	"time"

	"github.com/cmlcloud/cml-cloud-manager/application"
)

// ActivityCategories are the CML telemetry event categories that count as
// somebody using the controller (upstream's WORKER_ACTIVITY_RELEVANT_CATEGORIES).
var ActivityCategories = []string{
	"start_lab", "stop_lab", "wipe_lab", "import_lab", "export_lab",
	"start_node", "stop_node", "queue_node", "boot_node", "user_activity",
}

// DefaultExcludedUserPattern matches the user ids of CML automation accounts,
// among them the account the product itself logs in with: its own polling
// and lab operations are not a person's activity.
const DefaultExcludedUserPattern = `^00000000-0000-`

// UserIdentifier is implemented by a CML client that knows the user id it is
// logged in as on a controller ("" when it does not know yet); the activity
// filter then excludes that user too.
type UserIdentifier interface {
	UserID(endpoint string) string
}

// activityFilter picks the newest activity of a person from a controller's
// telemetry events.
type activityFilter struct {
	categories map[string]bool
	users      map[string]bool
	pattern    *regexp.Regexp
	self       UserIdentifier
}

func newActivityFilter(excludedUsers []string, pattern string, self UserIdentifier) (activityFilter, error) {
	f := activityFilter{categories: map[string]bool{}, users: map[string]bool{}, self: self}
	for _, c := range ActivityCategories {
		f.categories[c] = true
	}
	for _, u := range excludedUsers {
		if u != "" {
			f.users[u] = true
		}
	}
	if pattern != "" {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return f, fmt.Errorf("excluded user pattern %q: %w", pattern, err)
		}
		f.pattern = re
	}
	return f, nil
}

// excluded reports whether events of userID are the product's own (or
// another automation account's). Events without a user id are a person's:
// nothing says otherwise.
func (f activityFilter) excluded(endpoint, userID string) bool {
	switch {
	case userID == "":
		return false
	case f.users[userID]:
		return true
	case f.pattern != nil && f.pattern.MatchString(userID):
		return true
	case f.self != nil && f.self.UserID(endpoint) == userID:
		return true
	}
	return false
}

// latest returns the time and category of the newest relevant event of a
// person after since; ok is false when there is none. Times in the future
// (a controller whose clock runs ahead) count as now.
func (f activityFilter) latest(endpoint string, events []application.CMLTelemetryEvent, since, now time.Time) (at time.Time, category string, ok bool) {
	for _, e := range events {
		if !f.categories[e.Category] || f.excluded(endpoint, e.UserID) {
			continue
		}
		ts := e.Timestamp
		if ts.After(now) {
			ts = now
		}
		if !ts.After(since) || (ok && !ts.After(at)) {
			continue
		}
		at, category, ok = ts, e.Category, true
	}
	return at.UTC(), category, ok
}
