package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		wantOK bool
		want   string
	}{
		{
			name: "pass and fail with subtests",
			in: `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"run","Package":"p","Test":"TestA/one"}
{"Action":"pass","Package":"p","Test":"TestA/one","Elapsed":1.5}
{"Action":"run","Package":"p","Test":"TestA/two"}
{"Action":"output","Package":"p","Test":"TestA/two","Output":"    wrong cells\n"}
{"Action":"fail","Package":"p","Test":"TestA/two","Elapsed":2}
{"Action":"fail","Package":"p","Test":"TestA","Elapsed":3.5}
{"Action":"fail","Package":"p","Elapsed":4}
`,
			wantOK: false,
			want: "=== RUN   TestA\n" +
				"    wrong cells\n" +
				"\n=== summary\n" +
				"TEST         RESULT  SECONDS\n" +
				"TestA        FAIL    3.50\n" +
				"  TestA/one  PASS    1.50\n" +
				"  TestA/two  FAIL    2.00\n" +
				"1 passed, 2 failed, 0 skipped; a package failed (see its output above)\n",
		},
		{
			name: "all pass",
			in: `{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"pass","Package":"p","Test":"TestB","Elapsed":0.25}
{"Action":"pass","Package":"p","Elapsed":1}
`,
			wantOK: true,
			want: "\n=== summary\n" +
				"TEST   RESULT  SECONDS\n" +
				"TestB  PASS    0.25\n" +
				"1 passed, 0 failed, 0 skipped\n",
		},
		{
			name: "a test that never finished and a non-JSON line",
			in: `go: build failed
{"Action":"run","Package":"p","Test":"TestC"}
`,
			wantOK: false,
			want: "go: build failed\n" +
				"\n=== summary\n" +
				"TEST   RESULT   SECONDS\n" +
				"TestC  RUNNING  0.00\n" +
				"0 passed, 0 failed, 0 skipped, 1 never finished (timeout or crash)\n",
		},
		{
			name:   "nothing ran",
			in:     `{"Action":"pass","Package":"p","Elapsed":0}` + "\n",
			wantOK: false,
			want:   "\n=== summary\nTEST  RESULT  SECONDS\n0 passed, 0 failed, 0 skipped; no test ran (check -run)\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			ok, err := summarize(strings.NewReader(tc.in), &out)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.wantOK {
				t.Errorf("ok = %v, want %v", ok, tc.wantOK)
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
