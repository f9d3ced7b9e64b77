# Sourced by the device scripts: the GPU machine has the NVIDIA driver but no Vulkan loader, so
# Debian's libvulkan1 and glvnd packages shipped in .gl/ are unpacked first.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
