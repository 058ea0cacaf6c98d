package cloudsim

// globMatch reports whether s matches an EC2 filter pattern: '*' matches any
// run of characters (also none), '?' exactly one character, and a backslash
// makes the next character literal. Everything else matches itself; EC2 has
// no character classes.
func globMatch(pattern, s string) bool {
	p := []rune(pattern)
	r := []rune(s)
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(r) {
		if pi < len(p) {
			switch c := p[pi]; {
			case c == '*':
				starP, starS = pi, si
				pi++
				continue
			case c == '?':
				pi++
				si++
				continue
			case c == '\\' && pi+1 < len(p):
				if p[pi+1] == r[si] {
					pi += 2
					si++
					continue
				}
			case c == r[si]:
				pi++
				si++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		si = starS
		pi = starP + 1
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// globAny reports whether any of values matches any of patterns.
func globAny(patterns []string, values ...string) bool {
	for _, v := range values {
		for _, p := range patterns {
			if globMatch(p, v) {
				return true
			}
		}
	}
	return false
}
