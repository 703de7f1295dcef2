# Init-data and launch-measurement checks. FUZZTIME bounds each fuzz run.
FUZZTIME ?= 60s

.PHONY: test-measure fuzz-measure
test-measure:
	$(GO) test -count=1 ./virtcontainers/initdata/... ./virtcontainers/measure/... ./shim/cli/measure/...

fuzz-measure:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./virtcontainers/initdata/
	$(GO) test -run '^$$' -fuzz '^FuzzReadBlockImage$$' -fuzztime $(FUZZTIME) ./virtcontainers/initdata/
	$(GO) test -run '^$$' -fuzz '^FuzzParseOVMF$$' -fuzztime $(FUZZTIME) ./virtcontainers/measure/

# The AmdSev build of OVMF, the firmware of the SEV, SEV-ES and SNP classes
# (hypervisor.firmware = "OVMF.amdsev.fd"): extracted from Debian's
# ovmf-amdsev package by scripts/fetch-firmware.sh, kept until removed, since
# its bytes are part of every launch digest of those classes.
FIRMWARE_OUT ?= build/firmware
.PHONY: firmware install-firmware
firmware:
	@[ -f $(FIRMWARE_OUT)/OVMF.amdsev.fd ] || bash scripts/fetch-firmware.sh $(FIRMWARE_OUT)

# Copies it into share_dir (`make install` runs this): the fetched copy, else
# the file of an installed ovmf-amdsev package (Debian 13 and later).
install-firmware:
	@src=$(FIRMWARE_OUT)/OVMF.amdsev.fd; [ -f $$src ] || src=/usr/share/ovmf/OVMF.amdsev.fd; \
	if [ -f $$src ]; then install -D -m 0644 $$src $(DESTDIR)$(SHARE)/OVMF.amdsev.fd && echo "install-firmware: $$src -> $(DESTDIR)$(SHARE)/OVMF.amdsev.fd"; \
	else echo "AmdSev OVMF not fetched: run 'make firmware', then 'make install', for the qemu-sev and qemu-snp classes"; fi
