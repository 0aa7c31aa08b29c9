//go:build race

package chaos

// raceEnabled skips the chaos run under the race detector, which would
// only watch the harness: the processes under test are separate binaries.
const raceEnabled = true
