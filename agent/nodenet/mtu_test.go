package nodenet

import "testing"

func TestPodMTU(t *testing.T) {
	for _, tc := range []struct {
		uplink, want int
		err          bool
	}{{1500, 1450, false}, {9000, 8950, false}, {626, 576, false}, {600, 0, true}} {
		got, err := PodMTU(tc.uplink)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("PodMTU(%d) = %d, %v; want %d (error %v)", tc.uplink, got, err, tc.want, tc.err)
		}
	}
}
