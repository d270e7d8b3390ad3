package archive

import (
	"encoding/binary"
	"hash/crc32"
	"io"
)

// Stored xz streams carry data without compressing it, for content that is
// already compressed (pg_dump's *.dat.gz table files). The format is a
// regular .xz stream (see xz-file-format.txt) with a CRC32 check and one
// block whose single LZMA2 filter holds only uncompressed LZMA2 chunks,
// so every xz decoder accepts it:
//
//	stream header  FD '7zXZ' 00 | flags 00 01 | CRC32(flags)
//	block header   size | block flags 00 | filter 21, 1 property byte,
//	               dictionary 00 | zero padding | CRC32(header)
//	LZMA2 data     per chunk of at most 64 KiB: 01 (first, dictionary
//	               reset) or 02, size-1 as 2 bytes big-endian, the bytes;
//	               then the end marker 00
//	block padding  zeros up to a multiple of 4, then CRC32(data)
//	index          00 | record count | unpadded size, uncompressed size |
//	               zero padding | CRC32(index)
//	stream footer  CRC32(backward size, flags) | backward size | 00 01 'YZ'
//
// All CRC32 values and the backward size are little-endian.

// xzStoredChunk is the largest uncompressed LZMA2 chunk.
const xzStoredChunk = 1 << 16

// xzStoredHead is the stream header and the block header of every stored
// stream: neither depends on the data.
var xzStoredHead = func() []byte {
	h := []byte{0xfd, '7', 'z', 'X', 'Z', 0x00, 0x00, 0x01}
	h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(h[6:8]))
	// Block header: 12 bytes, so its size byte is 12/4-1 = 2.
	bh := []byte{0x02, 0x00, 0x21, 0x01, 0x00, 0x00, 0x00, 0x00}
	bh = binary.LittleEndian.AppendUint32(bh, crc32.ChecksumIEEE(bh))
	return append(h, bh...)
}()

// xzStreamHeaderLen is the length of the xz stream header.
const xzStreamHeaderLen = 12

// writeStoredXZ writes p to w as one complete xz stream whose data is
// stored uncompressed. An empty p yields a stream without blocks.
func writeStoredXZ(w io.Writer, p []byte) error {
	return writeStoredXZCRC(w, p, crc32.ChecksumIEEE(p))
}

// writeStoredXZCRC is writeStoredXZ with the CRC32 (IEEE) of p already
// computed, so that it can be computed by another goroutine.
func writeStoredXZCRC(w io.Writer, p []byte, sum uint32) error {
	if len(p) == 0 {
		return writeXZTail(w, xzStoredHead[:xzStreamHeaderLen], nil)
	}
	if _, err := w.Write(xzStoredHead); err != nil {
		return err
	}
	ctrl := byte(0x01) // uncompressed chunk, dictionary reset
	var hdr [3]byte
	chunks := 0
	for rest := p; len(rest) > 0; chunks++ {
		k := min(len(rest), xzStoredChunk)
		hdr[0] = ctrl
		binary.BigEndian.PutUint16(hdr[1:], uint16(k-1))
		if _, err := w.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := w.Write(rest[:k]); err != nil {
			return err
		}
		rest = rest[k:]
		ctrl = 0x02 // uncompressed chunk, no reset
	}
	compressed := uint64(3*chunks + len(p) + 1) // chunks and end marker
	tail := make([]byte, 0, 64)
	tail = append(tail, 0x00) // LZMA2 end marker
	tail = append(tail, make([]byte, pad4(compressed))...)
	tail = binary.LittleEndian.AppendUint32(tail, sum)
	blockHeaderLen := uint64(len(xzStoredHead) - xzStreamHeaderLen)
	rec := []uint64{blockHeaderLen + compressed + 4, uint64(len(p))}
	return writeXZTail(w, tail, rec)
}

// writeXZTail writes pre (the end of the stream so far), then the index
// holding the block record rec (unpadded and uncompressed size; nil for
// no block) and the stream footer.
func writeXZTail(w io.Writer, pre []byte, rec []uint64) error {
	idx := []byte{0x00, byte(len(rec) / 2)}
	for _, v := range rec {
		idx = binary.AppendUvarint(idx, v)
	}
	idx = append(idx, make([]byte, pad4(uint64(len(idx))))...)
	idx = binary.LittleEndian.AppendUint32(idx, crc32.ChecksumIEEE(idx))
	foot := make([]byte, 4, 12)
	foot = binary.LittleEndian.AppendUint32(foot, uint32(len(idx)/4-1))
	foot = append(foot, 0x00, 0x01)
	binary.LittleEndian.PutUint32(foot, crc32.ChecksumIEEE(foot[4:10]))
	foot = append(foot, 'Y', 'Z')
	out := append(append(append(make([]byte, 0, len(pre)+len(idx)+len(foot)), pre...), idx...), foot...)
	_, err := w.Write(out)
	return err
}

// pad4 returns the number of zero bytes that pad n to a multiple of 4.
func pad4(n uint64) int {
	return int((4 - n%4) % 4)
}
