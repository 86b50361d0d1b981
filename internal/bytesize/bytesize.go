// Package bytesize writes byte counts for people, as warren's acquisition commands report sizes: "512 B",
// "1.5 KiB", "2.0 GiB" (binary units, one decimal).
package bytesize

import "fmt"

// Format writes n in the largest binary unit (KiB, MiB, ... EiB) it holds at least one of, with one decimal; n
// below 1024 in bytes.
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
