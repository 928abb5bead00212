#!/bin/sh
# Runs in the guest as the stub init's child: D-Bus, btmon, then the scenarios (guest.py
# gives the kernel its adapter, a virtual controller on /dev/vhci, and then starts
# bluetoothd; the phones are on the same virtual radio, inside guest.py).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/repo
set -x
mkdir -p /run/dbus /var/lib/bluetooth
ip link set lo up  # bridge run's local API listens on 127.0.0.1
modprobe bluetooth; modprobe hci_vhci
dbus-daemon --system --fork
btmon -w /out/hci.btsnoop > /dev/null 2>&1 &
btmon=$!
cd /tmp
/opt/venv/bin/python -m tools.bluez_vm.guest $(cat /out/scenarios) &
py=$!
set +x
n=0
limit=$(cat /out/limit 2>/dev/null || echo 340)  # the host's boot timeout, less the boot
while kill -0 $py 2>/dev/null && [ $n -lt $limit ]; do sleep 1; n=$((n + 1)); done
if kill -0 $py 2>/dev/null; then
    # hung past every deadline of its own: what the kernel says each thread is doing
    {
        echo "guest.py (pid $py) still running after $limit s"
        ps -eo pid,stat,wchan:30,etime,args
        for t in /proc/$py/task/*; do
            echo "thread ${t##*/}: $(cut -d' ' -f3 $t/stat) wchan=$(cat $t/wchan) syscall=$(cat $t/syscall)"
            cat $t/stack 2>/dev/null
        done
        ls -l /proc/$py/fd
    } > /tmp/hang.txt 2>&1
    cp /tmp/hang.txt /out/hang.txt
    kill -TERM $py; sleep 5; kill -KILL $py 2>/dev/null
fi
set -x
wait $py
code=$?
cp /tmp/*.txt /out/ 2>/dev/null
kill $btmon 2>/dev/null
sleep 0.5
exit $code
