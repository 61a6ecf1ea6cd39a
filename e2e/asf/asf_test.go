package asf

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// assetPath is the committed test asset: 4 s of a 440 Hz sine, WMA v2 at
// 32 kbit/s, 800-byte packets, made with ffmpeg (see ../testdata/sine440.md).
const assetPath = "../testdata/sine440.asf"

func loadAsset(t testing.TB) *File {
	t.Helper()
	f, err := ReadFile(assetPath)
	require.NoError(t, err)
	return f
}

func TestParseAsset(t *testing.T) {
	f := loadAsset(t)
	assert.Equal(t, uint32(800), f.Info.PacketSize)
	assert.Equal(t, uint64(len(f.Packets)), f.Info.PacketCount)
	assert.Equal(t, 29, len(f.Packets))
	assert.Equal(t, []uint16{1}, f.Info.StreamIDs)
	assert.False(t, f.Info.Broadcast)
	assert.InDelta(t, 4*time.Second, f.Info.Duration, float64(200*time.Millisecond))
	assert.Positive(t, f.Info.MaxBitrate)
	assert.Equal(t, f.Info.HeaderLen+DataObjectPrefixLen, len(f.Header))
	for i, p := range f.Packets {
		require.Len(t, p, 800, "packet %d", i)
		// ffmpeg writes error correction data first: 0x82, 0, 0.
		assert.Equal(t, byte(0x82), p[0], "packet %d", i)
	}

	// The stream header alone parses to the same description.
	info, err := ParseHeader(f.Header)
	require.NoError(t, err)
	assert.Equal(t, f.Info, info)
}

func TestTruncate(t *testing.T) {
	f := loadAsset(t)
	for _, n := range []int{1, 8, 28, 29} {
		g, err := f.Truncate(n)
		require.NoError(t, err)
		assert.Equal(t, uint64(n), g.Info.PacketCount)
		assert.Len(t, g.Packets, n)
		assert.Equal(t, f.Info.PacketSize, g.Info.PacketSize)
		assert.Equal(t, f.Info.StreamIDs, g.Info.StreamIDs)
		assert.LessOrEqual(t, g.Info.Duration, f.Info.Duration)
		hlen := g.Info.HeaderLen
		assert.Equal(t, uint64(n), binary.LittleEndian.Uint64(g.Header[hlen+dataTotalPackets:]), "data object count")
		assert.Equal(t, uint64(DataObjectPrefixLen+n*800), binary.LittleEndian.Uint64(g.Header[hlen+16:]), "data object size")
	}
	g, err := f.Truncate(29)
	require.NoError(t, err)
	assert.Equal(t, f.Header, g.Header, "truncating to every packet changes nothing")
	assert.Equal(t, uint64(29), f.Info.PacketCount, "the original is untouched")

	for _, n := range []int{0, -1, 30} {
		_, err := f.Truncate(n)
		assert.Error(t, err, "n=%d", n)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	f := loadAsset(t)
	hlen := f.Info.HeaderLen
	edit := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), f.Header...)) }
	fpOff := func(b []byte) int {
		for off := headerObjectLen; off < hlen; off += int(binary.LittleEndian.Uint64(b[off+16:])) {
			if string(b[off:off+16]) == guidFileProperties {
				return off
			}
		}
		t.Fatal("no file properties in the asset")
		return 0
	}

	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"only the header object", f.Header[:hlen], ErrShort},
		{"one byte short of the data prefix", f.Header[:len(f.Header)-1], ErrShort},
		{"not a header object", edit(func(b []byte) []byte { b[0] ^= 1; return b }), ErrFormat},
		{"header larger than the bytes", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[16:], uint64(len(b)+1))
			return b
		}), ErrShort},
		{"no data object after the header", edit(func(b []byte) []byte { b[hlen] ^= 1; return b }), ErrFormat},
		{"sub-object of size zero", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[headerObjectLen+16:], 0)
			return b
		}), ErrFormat},
		{"sub-object past the header", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[headerObjectLen+16:], uint64(hlen))
			return b
		}), ErrFormat},
		{"variable packet size", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[fpOff(b)+fpMaxPacket:], 801)
			return b
		}), ErrFormat},
		{"no file properties", edit(func(b []byte) []byte { b[fpOff(b)] ^= 1; return b }), ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseHeader(tt.b)
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestParseRejectsBrokenData(t *testing.T) {
	f := loadAsset(t)
	whole := append(append([]byte(nil), f.Header...), joinPackets(f.Packets)...)
	_, err := Parse(whole)
	require.NoError(t, err)

	_, err = Parse(whole[:len(whole)-1])
	assert.ErrorIs(t, err, ErrShort, "data object longer than the file")

	odd := append([]byte(nil), whole...)
	hlen := f.Info.HeaderLen
	binary.LittleEndian.PutUint64(odd[hlen+16:], binary.LittleEndian.Uint64(odd[hlen+16:])-1)
	_, err = Parse(odd)
	assert.ErrorIs(t, err, ErrFormat, "not whole packets")
}

func joinPackets(ps [][]byte) []byte {
	var out []byte
	for _, p := range ps {
		out = append(out, p...)
	}
	return out
}

// FuzzParseHeader: no input panics, and whatever parses has a usable packet
// size and at least one stream.
func FuzzParseHeader(f *testing.F) {
	a, err := ReadFile(assetPath)
	require.NoError(f, err)
	f.Add(a.Header)
	f.Add(a.Header[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := ParseHeader(b)
		if err != nil {
			return
		}
		if info.PacketSize == 0 || len(info.StreamIDs) == 0 || info.HeaderLen+DataObjectPrefixLen > len(b) {
			t.Fatalf("accepted a header it cannot use: %+v", info)
		}
		// Parse must cope with the same bytes as a (short) whole file.
		Parse(b)
	})
}
