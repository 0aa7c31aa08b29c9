package demo

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestUnwindRunsWhatIsLeftNewestFirst(t *testing.T) {
	var td teardown
	var ran []string
	step := func(name string, err error) func(context.Context) error {
		return func(context.Context) error {
			ran = append(ran, name)
			return err
		}
	}
	td.push("first", step("first", nil))
	done := td.push("second", step("second", nil))
	td.push("third", step("third", errors.New("boom")))
	td.push("fourth", step("fourth", nil))

	if err := done.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := td.unwind(context.Background(), func(string, ...any) {})
	if want := []string{"second", "fourth", "third", "first"}; !reflect.DeepEqual(ran, want) {
		t.Errorf("ran %v, want %v", ran, want)
	}
	if err == nil || err.Error() != "third: boom" {
		t.Errorf("unwind = %v, want third: boom", err)
	}
	if err := td.unwind(context.Background(), func(string, ...any) {}); err != nil || len(ran) != 4 {
		t.Errorf("a second unwind ran steps again: %v, %v", ran, err)
	}
}
