# railnet — build, test, benchmark, demo.
# Go 1.26 from PATH, or where the Go tarball installs it.
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin
# Expanded once: the image, its tag and the e2e suite's expectation agree
# even if the tree changes during a long run.
ifeq ($(origin VERSION), undefined)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
endif
LDFLAGS := -s -w -X main.version=$(VERSION)
# Tests build sysfs trees with tens of thousands of files: tmpfs is what
# sysfs is like and ten times faster than a disk.
TESTTMP := $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo /tmp)
FUZZTIME ?= 10s
DEMO_FIXTURE ?= testdata/fixtures/dgx-h100-like.json
OUT     := out

.PHONY: all build test unit fuzz-short bench demo lint deps clean cni-plugins test-kernel image e2e

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# image builds the container image (images/Dockerfile) with Debian's buildah,
# daemonless and registry-free (FROM scratch), into an OCI archive that
# `ctr -n k8s.io images import` and `docker load` accept.
IMAGE      ?= localhost/railnet/railnet:$(VERSION)
IMAGE_TAR  ?= $(BIN)/railnet-image.tar
image: build
	@command -v buildah >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null; }
	@store=$$(mktemp -d $(TESTTMP)/railnet-buildah.XXXXXX); trap 'buildah --root "$$store/root" --runroot "$$store/run" --storage-driver vfs rm -a >/dev/null 2>&1; rm -rf "$$store"' EXIT; \
	b="buildah --root $$store/root --runroot $$store/run --storage-driver vfs"; \
	$$b build --isolation chroot --quiet --build-arg VERSION=$(VERSION) -f images/Dockerfile -t $(IMAGE) . >/dev/null && \
	rm -f $(IMAGE_TAR) && $$b push --quiet $(IMAGE) oci-archive:$(IMAGE_TAR):$(IMAGE) && \
	echo "$(IMAGE) → $(IMAGE_TAR) ($$(du -h $(IMAGE_TAR) | cut -f1))"

# e2e brings up a real single-node Kubernetes (etcd, apiserver, controller
# manager, scheduler, kubelet, containerd, Multus) on a mocked sysfs node,
# deploys railnet from the image with kustomize and runs the suite.
e2e: image
	RAILNET_VERSION=$(VERSION) bash e2e/cluster/run.sh

# deps installs, as root on Debian, what the tests and the demo call.
deps:
	@missing=""; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v ping >/dev/null 2>&1 || missing="$$missing iputils-ping"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (install them, or run as root on Debian)"; exit 1; fi; \
	fi

# test is everything CI runs.
test: deps lint unit fuzz-short test-kernel e2e

# test-kernel boots Debian's kernel under QEMU (twice: RDMA netns shared and
# exclusive) and runs the kernel-tier tests (build tag kerneltest) inside it.
test-kernel:
	bash e2e/kernel/run.sh

# The reference CNI plugins the CNI tests delegate to (IPAM) and compare with.
CNI_PLUGINS_VERSION := v1.10.0
CNI_PLUGINS := $(addprefix github.com/containernetworking/plugins/plugins/,ipam/host-local ipam/static main/host-device)
cni-plugins:
	@mkdir -p $(BIN)/cni
	cd /tmp && GOBIN=$(CURDIR)/$(BIN)/cni GOFLAGS=-mod=mod $(GO) install $(addsuffix @$(CNI_PLUGINS_VERSION),$(CNI_PLUGINS))

unit: build cni-plugins
	TMPDIR=$(TESTTMP) RAILNET_CNI_PLUGINS=$(CURDIR)/$(BIN)/cni $(GO) test -count=1 -race ./...

# fuzz runs one fuzz target for $(FUZZTIME). Go's fuzzer sometimes ends a
# time-bounded run with "context deadline exceeded" while a worker shuts
# down (no input failed): that, and only that, is run once more. A real
# failure is written to testdata/fuzz and fails again at once.
define fuzz
if TMPDIR=$(TESTTMP) $(GO) test -run='^$$' -fuzz='^$(1)$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $(2) > $(TESTTMP)/fuzz-$(1).log 2>&1; then \
	tail -1 $(TESTTMP)/fuzz-$(1).log; \
elif grep -q 'context deadline exceeded' $(TESTTMP)/fuzz-$(1).log && ! grep -q 'Failing input written' $(TESTTMP)/fuzz-$(1).log; then \
	echo "$(1): the fuzzer's own context deadline (no failing input): once more"; \
	TMPDIR=$(TESTTMP) $(GO) test -run='^$$' -fuzz='^$(1)$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $(2); \
else cat $(TESTTMP)/fuzz-$(1).log; exit 1; fi
endef

fuzz-short:
	$(call fuzz,FuzzParseBDF,./pkg/sysfs)
	$(call fuzz,FuzzParse,./pkg/fakesys)
	$(call fuzz,FuzzExpandPattern,./pkg/fakesys)
	$(call fuzz,FuzzParse,./pkg/cni/config)
	$(call fuzz,FuzzPrevResult,./pkg/cni)
	$(call fuzz,FuzzPodIdentity,./pkg/cni)
	$(call fuzz,FuzzParse,./pkg/pools)
	$(call fuzz,FuzzACSControl,./pkg/doctor)
	$(call fuzz,FuzzParse,./pkg/keys)

bench: build cni-plugins
	TMPDIR=$(TESTTMP) RAILNET_CNI_PLUGINS=$(CURDIR)/$(BIN)/cni $(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...
	@[ -f /usr/share/misc/pci.ids ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pci.ids >/dev/null; }
	cd e2e/ghwbench && $(GO) run . -n 20 ../../testdata/fixtures/vf-scale.json

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l cmd pkg e2e 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# demo materializes the DGX H100-like fixture and shows what railnet sees.
demo: build
	@dir=$$(mktemp -d $(TESTTMP)/railnet-demo.XXXXXX); trap 'rm -rf "$$dir"' EXIT; \
	$(BIN)/railnetctl fakesys build $(DEMO_FIXTURE) "$$dir" && \
	echo && $(BIN)/railnetctl --sysfs-root "$$dir/sys" --devfs-root "$$dir/dev" inventory --summary && \
	echo && $(BIN)/railnetctl --sysfs-root "$$dir/sys" --devfs-root "$$dir/dev" topology && \
	echo && $(BIN)/railnetctl --sysfs-root "$$dir/sys" --devfs-root "$$dir/dev" validate-config deployments/overlays/dgx-h100/config.yaml && \
	mkdir -p $(OUT) && \
	$(BIN)/railnetctl --sysfs-root "$$dir/sys" --devfs-root "$$dir/dev" topology --format json > $(OUT)/topology.json && \
	$(BIN)/railnetctl --sysfs-root "$$dir/sys" --devfs-root "$$dir/dev" topology --format dot > $(OUT)/topology.dot && \
	if command -v dot >/dev/null 2>&1; then dot -Tsvg $(OUT)/topology.dot -o $(OUT)/topology.svg && echo "graph: $(OUT)/topology.svg"; \
	else echo "graph: $(OUT)/topology.dot (install graphviz for SVG)"; fi; \
	echo "matrix: $(OUT)/topology.json"; \
	for f in doctor-clean doctor-planted; do \
	  $(BIN)/railnetctl fakesys build testdata/fixtures/$$f.json "$$dir/$$f" >/dev/null && \
	  echo && echo "railnetctl doctor on $$f:" && \
	  { $(BIN)/railnetctl --sysfs-root "$$dir/$$f/sys" --devfs-root "$$dir/$$f/dev" doctor --config pkg/doctor/testdata/doctor-pools.yaml; \
	    echo "(exit $$?: 0 clean, 1 warnings, 2 errors)"; }; \
	done

clean:
	rm -rf $(BIN) $(OUT)
