# Package targets, included by the top-level Makefile:
#   include packaging/packaging.mk
#
#   make deb             build/deb/tetrahost_<version>_<arch>.deb (+ lintian)
#   make rpm             build/rpm/RPMS/<arch>/tetrahost-<version>-1.<arch>.rpm (+ rpmlint)
#   make test-packaging  both, the host-side checks (tests/packaging), then the
#                        .deb end to end in the systemd guest of tests/vm
# Build tools: scripts/install-packaging-deps.sh (as root).

# Whether included first or last, this file must not change the Makefile's
# default goal (`make` = `make build`).
pkg_saved_default_goal := $(.DEFAULT_GOAL)

PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PKG_DEB_DIR := build/deb
PKG_RPM_DIR := build/rpm
# pytest: the project venv when built (make build), else the system's (python3-pytest)
PKG_PY      ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,/usr/bin/python3)

# The source tree to package: tracked files as they are in the git index
# (committed or staged: another engineer's unstaged edits do not leak into a
# package), plus new files not yet tracked and not ignored, as they are.
# Nothing of build/, .venv/ or compiled leftovers.  In a clean clone (CI) this
# is simply the checkout.  Usage: $(call pkg_tree,DESTDIR)
define pkg_tree
	mkdir -p $(1)
	git checkout-index --all --force --prefix=$(abspath $(1))/
	git ls-files -z --others --exclude-standard | tar -c --null -T - -f - | tar -x -C $(1)
endef

.PHONY: deb rpm test-packaging packaging-deps

packaging-deps:
	scripts/install-packaging-deps.sh

# dpkg-buildpackage wants debian/ at the top of a source tree: build in a copy
# with packaging/deb as debian/ (and the unit where dh_installsystemd looks).
deb:
	rm -rf $(PKG_DEB_DIR)
	$(call pkg_tree,$(PKG_DEB_DIR)/src)
	cp -r packaging/deb $(PKG_DEB_DIR)/src/debian
	cp packaging/systemd/tetrahost.service $(PKG_DEB_DIR)/src/debian/tetrahost.service
	cd $(PKG_DEB_DIR)/src && env -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    dpkg-buildpackage -b -us -uc > ../build.log 2>&1 || { tail -40 ../build.log; exit 1; }
	lintian --info --fail-on error,warning $(PKG_DEB_DIR)/tetrahost_$(PKG_VERSION)-*.deb
	@ls -l $(PKG_DEB_DIR)/*.deb

# rpmbuild on Debian: the BuildRequires name Fedora packages that the Debian
# rpm database does not know, hence --nodeps (the tools are installed by apt).
rpm:
	rm -rf $(PKG_RPM_DIR) && mkdir -p $(PKG_RPM_DIR)/SOURCES
	$(call pkg_tree,$(PKG_RPM_DIR)/tetrahost-$(PKG_VERSION))
	tar -C $(PKG_RPM_DIR) -czf $(PKG_RPM_DIR)/SOURCES/tetrahost-$(PKG_VERSION).tar.gz tetrahost-$(PKG_VERSION)
	rm -rf $(PKG_RPM_DIR)/tetrahost-$(PKG_VERSION)
	env -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    rpmbuild -bb --nodeps --define "_topdir $(CURDIR)/$(PKG_RPM_DIR)" \
	    packaging/rpm/tetrahost.spec > $(PKG_RPM_DIR)/build.log 2>&1 \
	    || { tail -40 $(PKG_RPM_DIR)/build.log; exit 1; }
	rpmlint -c packaging/rpm/rpmlint.toml -r packaging/rpm/tetrahost.rpmlintrc $(PKG_RPM_DIR)/RPMS/*/tetrahost-*.rpm
	@ls -l $(PKG_RPM_DIR)/RPMS/*/*.rpm

test-packaging: deb rpm
	$(PKG_PY) -m pytest -q -p no:cacheprovider tests/packaging
	bash tests/packaging/e2e_systemd.sh

.DEFAULT_GOAL := $(pkg_saved_default_goal)
