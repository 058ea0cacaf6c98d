package worker

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cmlcloud/cml-cloud-manager/domain"
)

// Reserved tags are set by the product on every instance it launches; users
// may not change or remove them.
const (
	TagManagedBy      = "ManagedBy"
	TagManagedByValue = "cml-cloud-manager"
	TagWorkerID       = "cml-cloud-manager/worker-id"
)

// Limits on inputs, from EC2's own limits where there is one.
const (
	MaxNameLength     = 128
	MaxTags           = 50
	MaxTagKeyLength   = 128
	MaxTagValueLength = 256
	MaxLabYAMLBytes   = 4 << 20
	MaxMessageLength  = 2000
)

var (
	regionRE        = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$`)
	instanceTypeRE  = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	amiIDRE         = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)
	instanceIDRE    = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)
	subnetIDRE      = regexp.MustCompile(`^subnet-[0-9a-f]{8}([0-9a-f]{9})?$`)
	securityGroupRE = regexp.MustCompile(`^sg-[0-9a-f]{8}([0-9a-f]{9})?$`)
	labIDRE         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// ValidRegion reports whether s looks like an AWS region name.
func ValidRegion(s string) bool { return regionRE.MatchString(s) }

// ValidInstanceType reports whether s looks like an EC2 instance type.
func ValidInstanceType(s string) bool { return len(s) <= 64 && instanceTypeRE.MatchString(s) }

// ValidAMIID reports whether s looks like an AMI id.
func ValidAMIID(s string) bool { return amiIDRE.MatchString(s) }

// ValidInstanceID reports whether s looks like an EC2 instance id.
func ValidInstanceID(s string) bool { return instanceIDRE.MatchString(s) }

// ValidSubnetID reports whether s looks like a subnet id.
func ValidSubnetID(s string) bool { return subnetIDRE.MatchString(s) }

// ValidSecurityGroupID reports whether s looks like a security group id.
func ValidSecurityGroupID(s string) bool { return securityGroupRE.MatchString(s) }

func checkName(p *domain.Problems, field, name string) {
	switch {
	case strings.TrimSpace(name) == "":
		p.Add(field, "is required")
	case utf8.RuneCountInString(name) > MaxNameLength:
		p.Add(field, "is longer than %d characters", MaxNameLength)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		p.Add(field, "contains control characters")
	case name != strings.TrimSpace(name):
		p.Add(field, "has leading or trailing spaces")
	}
}

func checkRegion(p *domain.Problems, region string) {
	if !ValidRegion(region) {
		p.Add("region", "%q is not an AWS region name", region)
	}
}

// CheckTags validates a user-supplied tag map (without the reserved tags).
func CheckTags(p *domain.Problems, field string, tags map[string]string) {
	if len(tags) > MaxTags-2 {
		p.Add(field, "has %d tags; at most %d are allowed besides the product's own", len(tags), MaxTags-2)
	}
	for k, v := range tags {
		switch {
		case k == "" || utf8.RuneCountInString(k) > MaxTagKeyLength:
			p.Add(field, "tag key %q must have 1 to %d characters", k, MaxTagKeyLength)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			p.Add(field, "tag key %q uses the reserved prefix aws:", k)
		case k == TagManagedBy || k == TagWorkerID:
			p.Add(field, "tag %q is managed by the product", k)
		}
		if utf8.RuneCountInString(v) > MaxTagValueLength {
			p.Add(field, "tag %q has a value longer than %d characters", k, MaxTagValueLength)
		}
	}
}

// truncate shortens an outcome message from a cloud API to MaxMessageLength
// bytes without splitting a character: a long message must not make recording
// the outcome fail.
func truncate(s string) string {
	if len(s) <= MaxMessageLength {
		return s
	}
	cut := MaxMessageLength
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// ValidLabID reports whether s looks like a CML lab id.
func ValidLabID(s string) bool { return labIDRE.MatchString(s) }
