export DISTRO_NAME=demo
export DIB_RELEASE=${DIB_RELEASE:-1}
export DIB_INIT_SYSTEM=none
