{
  "targets": [
    {
      "target_name": "virt_dib",
      "sources": [
        "native/addon.cc",
        "native/calls.cc",
        "native/errors.cc",
        "native/events.cc",
        "native/handle.cc",
        "native/value.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "GUESTFS_NO_DEPRECATED=1",
        "_GNU_SOURCE",
        "VIRT_DIB_BUILD_SYSTEM=\"node-gyp\""
      ],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-Wall", "-Wextra", "-Werror"],
      "cflags": ["<!@(pkg-config --cflags libguestfs)"],
      "libraries": ["<!@(pkg-config --libs libguestfs)", "-ldl", "-lpthread"]
    }
  ]
}
