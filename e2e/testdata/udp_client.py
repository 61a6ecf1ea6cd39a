# A plain UDP client, run under Dante's socksify so that its socket calls go
# through SOCKS5 without the program knowing.
# usage: udp_client.py send-first|bind-first TARGET_HOST TARGET_PORT COUNT
import socket
import sys

mode, target, count = sys.argv[1], (sys.argv[2], int(sys.argv[3])), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "bind-first":
    s.bind(("0.0.0.0", 0))
s.settimeout(10)
for i in range(count):
    s.sendto(b"%s %d" % (mode.encode(), i), target)
    data, addr = s.recvfrom(65535)
    print(data.decode(), "%s:%d" % addr, flush=True)
s.close()
