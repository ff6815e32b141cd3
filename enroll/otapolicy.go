package enroll

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bramley-mdm/bramley/handler"
)

// AllOf combines policies: a device is let in when none refuses it, and
// the first refusal, in order, is what it is told.
func AllOf(policies ...OTAPolicy) OTAPolicy {
	return func(ctx context.Context, user string, dev OTAAttributes) error {
		for _, p := range policies {
			if err := p(ctx, user, dev); err != nil {
				return err
			}
		}
		return nil
	}
}

// MinOSBuild is the OTAPolicy of bramley serve's --ota-min-os: it refuses
// devices whose OS is older than the minimum for their platform. The
// minimums are OS builds ("21A329" is iOS 17.0), because the VERSION a
// device posts is its build, not the version people see
// (docs/apple-protocols.md section c.0). Platforms are keyed by
// Platform; a device of a platform without a minimum passes, and one
// with a minimum but no readable VERSION is refused.
func MinOSBuild(minimums map[string]string) (OTAPolicy, error) {
	mins := make(map[string]build, len(minimums))
	for platform, v := range minimums {
		b, ok := parseBuild(v)
		if !ok {
			return nil, fmt.Errorf("minimum OS for %s: %q is not an OS build such as 21A329 (OTA devices report their build, not their version)", platform, v)
		}
		if platform == "" || Platform(platform) != platform {
			return nil, fmt.Errorf("minimum OS for %q: want one of iPhone, iPad, iPod, Mac, AppleTV, RealityDevice", platform)
		}
		mins[platform] = b
	}
	return func(_ context.Context, _ string, dev OTAAttributes) error {
		platform := Platform(dev.Product)
		min, ok := mins[platform]
		if !ok {
			return nil
		}
		got, ok := parseBuild(dev.Version)
		if !ok {
			return handler.Errorf(http.StatusForbidden, "enrollment policy needs the OS build of this %s, and the device did not report one", platform)
		}
		if got.less(min) {
			return handler.Errorf(http.StatusForbidden, "enrollment policy refuses this %s: its OS build %s is older than %s; update it and try again", platform, dev.Version, minimums[platform])
		}
		return nil
	}, nil
}

// Platform is the platform of a PRODUCT ("iPhone14,5" → "iPhone"): the
// model name without its numbers, every Mac model ("MacBookPro18,1",
// "iMac21,1", "Mac14,2") as "Mac". Unknown products give "".
func Platform(product string) string {
	name := strings.TrimRight(product, "0123456789,")
	switch name {
	case "iPhone", "iPad", "iPod", "AppleTV", "RealityDevice":
		return name
	case "Mac", "MacBook", "MacBookAir", "MacBookPro", "iMac", "iMacPro", "Macmini", "MacPro", "VirtualMac":
		return "Mac"
	}
	return ""
}

// build is an Apple OS build, "21F90" or "20G1120" or "22A5282m": a
// major number (one per major release), a letter (the minor release
// train), a number, and an optional suffix letter (betas, rapid
// security responses).
type build struct {
	major  int
	train  byte
	number int
	suffix string
}

func parseBuild(s string) (build, bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i > 3 || i >= len(s) || s[i] < 'A' || s[i] > 'Z' {
		return build{}, false
	}
	major, _ := strconv.Atoi(s[:i])
	b := build{major: major, train: s[i]}
	rest := s[i+1:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	if j == 0 || j > 6 {
		return build{}, false
	}
	b.number, _ = strconv.Atoi(rest[:j])
	b.suffix = rest[j:]
	if len(b.suffix) > 1 || (b.suffix != "" && (b.suffix[0] < 'a' || b.suffix[0] > 'z')) {
		return build{}, false
	}
	return b, true
}

// less orders builds by major, train and number, numerically (so
// 21F90 < 21F100); the suffix does not count.
func (b build) less(c build) bool {
	if b.major != c.major {
		return b.major < c.major
	}
	if b.train != c.train {
		return b.train < c.train
	}
	return b.number < c.number
}

// ParseMinOS reads --ota-min-os entries, PLATFORM=BUILD each
// ("iPhone=21A329").
func ParseMinOS(entries []string) (map[string]string, error) {
	m := make(map[string]string, len(entries))
	for _, e := range entries {
		platform, v, ok := strings.Cut(strings.TrimSpace(e), "=")
		if !ok || platform == "" || v == "" {
			return nil, fmt.Errorf("%q: want PLATFORM=BUILD, e.g. iPhone=21A329", e)
		}
		if _, dup := m[platform]; dup {
			return nil, fmt.Errorf("%q: %s given twice", e, platform)
		}
		m[platform] = v
	}
	if _, err := MinOSBuild(m); err != nil {
		return nil, err
	}
	return m, nil
}
