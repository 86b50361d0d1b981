package collector_test

import "runtime"

const goarch = runtime.GOARCH
