//go:build race

package chaos

// raceEnabled shortens the run under the race detector, which only
// watches the harness here: the processes under test are separate
// binaries.
const raceEnabled = true
