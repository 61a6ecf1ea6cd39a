# A UDP round trip through a SOCKS5 proxy with PySocks (Debian python3-socks).
# usage: pysocks_udp.py PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT COUNT [LOCAL_HOST]
# LOCAL_HOST (default 127.0.0.1) is where the UDP socket binds: the proxy
# takes datagrams only from the control connection's address.
import socket
import sys

import socks

proxy_host, proxy_port = sys.argv[1], int(sys.argv[2])
target = (sys.argv[3], int(sys.argv[4]))
count = int(sys.argv[5])

s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, proxy_host, proxy_port)
s.settimeout(10)
s.bind((sys.argv[6] if len(sys.argv) > 6 else "127.0.0.1", 0))
for i in range(count):
    s.sendto(b"pysocks %d" % i, target)
    data, addr = s.recvfrom(65535)
    print(data.decode(), "%s:%d" % addr, flush=True)
s.close()
